"""Privacy end to end: classification with the installed matchers and the config, Red fields
blocked before storage, and per-destination allow/block/redact/hash."""

from __future__ import annotations

import hashlib
from pathlib import Path

import httpx
import pytest

from gateway.config import parse_config
from gateway.plugins import Registry
from gateway.privacy.classifier import Classifier, PrivacyConfig, PrivacyPolicy, apply_policy, hash_value
from tests.gatewayproc import WRITE_KEY, GatewayProcess, config_text, read_jsonl, wait_booked

CARD = "4111 1111 1111 1111"


@pytest.fixture(scope="module")
def classifier(registry: Registry) -> Classifier:
    text = """
[sources.web]
write_key = "k"
[privacy.classes]
"properties.plan" = "green"
"traits.nickname" = "yellow"
[privacy.matchers.employee]
class = "red"
keys = ["employee id"]
precision = "similar"
pattern = 'E\\d{6}'
"""
    config = parse_config(text, registry)
    return Classifier([*registry.matchers.values(), *config.custom_matchers], config.privacy)


def event() -> dict:
    return {
        "type": "identify",
        "userId": "u1",
        "traits": {
            "email": " Ada@Example.COM ",
            "password": "hunter2",
            "phone": "+1 (415) 555-2671",
            "plan": "pro",
            "nickname": "ace",
            "employeeId": "E123456",
            "address": {"street": "1 Main St", "city": "Paris"},
            "contacts": ["ops team", "Grace@Example.com"],  # classified by its items' values
        },
        "properties": {
            "note": "call me after 5",
            "card_on_file": CARD,
            "plan": "gold",
            "items": [{"email": "b@c.d"}],
            "backups": ["vip", ["4012 8888 8888 1881"]],  # a card in a nested array
        },
        "context": {"ip": "10.1.2.3", "library": {"name": "analytics.js"}},
    }


def test_classification(classifier: Classifier) -> None:
    found = {f.path: f.cls for f in classifier.scan(event())}
    assert found["traits.password"] == "red"
    assert found["traits.email"] == "yellow" and found["traits.phone"] == "yellow"
    assert found["traits.employeeId"] == "red"  # custom matcher, by key
    assert found["traits.nickname"] == "yellow"  # explicit class
    assert found["traits.address"] == "yellow"  # the whole subtree
    assert found["properties.card_on_file"] == "red"  # by value: Luhn-valid card under a neutral key
    assert found["properties.items.email"] == "yellow"  # array items take the array's path
    assert found["traits.contacts"] == "yellow"  # an array is as severe as its scalar items
    assert found["properties.backups"] == "red"
    assert found["context.ip"] == "yellow"
    assert "traits.plan" not in found and "properties.plan" not in found and "context.library.name" not in found
    assert classifier.classify("properties.code", "code", "E654321")[0] == "red"  # custom matcher, by value


def test_policy_actions(classifier: Classifier) -> None:
    message = event()
    policy = PrivacyPolicy(red="block", yellow="hash", fields={"traits.phone": "redact", "properties.note": "block"})
    assert apply_policy(message, classifier, policy)
    traits = message["traits"]
    assert "password" not in traits and "employeeId" not in traits
    assert traits["email"] == hashlib.sha256(b"ada@example.com").hexdigest()  # normalised, then hashed
    assert traits["phone"] == "[REDACTED]"
    assert traits["plan"] == "pro"  # green untouched
    assert set(traits["address"]) == {"street", "city"} and traits["address"]["city"] == hash_value("Paris", "")
    assert "note" not in message["properties"] and "card_on_file" not in message["properties"]
    assert "backups" not in message["properties"]  # the Red array goes whole
    assert traits["contacts"] == [hash_value(v, "", ("email",)) for v in ("ops team", "Grace@Example.com")]


def test_hash_salt_and_phone_normalisation(classifier: Classifier) -> None:
    assert hash_value("+1 (415) 555-2671", "s", ("phone",)) == hashlib.sha256(b"s+14155552671").hexdigest()


def test_privacy_config_errors(registry: Registry) -> None:
    from gateway.errors import ConfigError

    base = '[sources.web]\nwrite_key = "k"\n'
    with pytest.raises(ConfigError) as raised:
        parse_config(base + '[privacy.matchers.x]\nclass = "purple"\nkeys = ["a"]\n', registry)
    assert raised.value.where.startswith("privacy.matchers.x")
    with pytest.raises(ConfigError) as raised:
        parse_config(base + '[destinations.d]\ntype = "file"\npath = "x"\nprivacy = { red = "shred" }\n', registry)
    assert raised.value.where == "destinations.d.privacy.red"


def test_red_never_reaches_the_disk_and_destinations_get_their_policy(tmp_path: Path) -> None:
    clear = tmp_path / "clear"
    config = tmp_path / "gateway.toml"
    config.write_text(
        config_text(tmp_path, admin=True).replace(
            f'write_key = "{WRITE_KEY}"', f'write_key = "{WRITE_KEY}"\nblock_red = true'
        )
        + 'privacy = { yellow = "hash", fields = { "traits.phone" = "block" } }\n'
        + f'\n[destinations.clear]\ntype = "file"\npath = "{clear}"\nbatch_max_wait_secs = 0.05\n'
        + '\n[privacy]\nhash_salt = { env = "GW_TEST_SALT" }\n'
        + '\n[privacy.matchers.employee]\nclass = "red"\nkeys = ["employee id"]\npattern = "E\\\\d{6}"\n'
    )
    with GatewayProcess(config, env={"GW_TEST_SALT": "pepper"}) as gateway:
        message = event()
        assert httpx.post(f"{gateway.url}/v1/identify", auth=(WRITE_KEY, ""), json=message).status_code == 200
        wait_booked(gateway, "archive", "clear")
        [hashed] = read_jsonl(tmp_path / "archive")
        [plain] = read_jsonl(clear)
    on_disk = b"".join(p.read_bytes() for p in tmp_path.glob("log.sqlite3*"))
    assert b"hunter2" not in on_disk and b"E123456" not in on_disk and b"1111 1111" not in on_disk
    assert b"8888 1881" not in on_disk  # the card inside an array of an innocent name
    assert b"Ada@Example.COM" in on_disk  # yellow is stored; destinations decide
    assert "password" not in plain["traits"] and "card_on_file" not in plain["properties"]
    assert plain["traits"]["email"] == " Ada@Example.COM " and plain["traits"]["plan"] == "pro"
    assert hashed["traits"]["email"] == hashlib.sha256(b"pepperada@example.com").hexdigest()
    assert "phone" not in hashed["traits"]
    assert hashed["traits"]["contacts"][1] == hashlib.sha256(b"peppergrace@example.com").hexdigest()
    assert plain["traits"]["contacts"] == ["ops team", "Grace@Example.com"] and "backups" not in plain["properties"]
    assert hashed["traits"]["plan"] == "pro" and hashed["userId"] == "u1"


def test_walk_gives_every_field_and_the_scan_findings(classifier: Classifier) -> None:
    message = event()
    message["context"]["library"]["version"] = "1.2.3"
    message["properties"]["tags"] = ["a", "b"]
    fields: dict[str, tuple[str, tuple[str, ...]]] = {}
    for f in classifier.walk(message):  # a path's most severe finding (an array's items are green)
        if f.path not in fields or f.cls != "green":
            fields[f.path] = (f.cls, f.hits)
    scanned = {f.path: (f.cls, f.hits) for f in classifier.scan(event())}
    assert {p: c for p, c in fields.items() if c[0] != "green"} == scanned  # the same non-green findings
    assert fields["traits.plan"] == ("green", ())
    assert fields["properties.note"] == ("green", ())
    assert fields["properties.tags"] == ("green", ())  # array items take the array's path
    assert fields["context.library.name"] == ("green", ())  # structural: inventoried, never classified
    assert fields["context.library.version"] == ("green", ())
    assert fields["traits.email"] == ("yellow", ("email",))
    # A Yellow object stands for its subtree (a policy acts on it whole), and its fields are
    # classified too, so nothing Red hides under it.
    assert fields["traits.address"][0] == "yellow" and fields["traits.address.city"][0] == "yellow"
    assert "userId" not in fields and "type" not in fields
    # One walk serves block_red too.
    blocked = event()
    findings = [f for f in classifier.walk(blocked) if f.cls != "green"]
    assert apply_policy(blocked, classifier, PrivacyPolicy(red="block"), findings)
    reference = event()
    apply_policy(reference, classifier, PrivacyPolicy(red="block"))
    assert blocked == reference


def test_red_fields_inside_a_yellow_object_are_blocked_and_hashing_it_never_carries_them(
    classifier: Classifier,
) -> None:
    message = {"type": "identify", "traits": {"address": {"street": "1 Main St", "password": "hunter2"}}}
    assert apply_policy(message, classifier, PrivacyPolicy(red="block"))
    assert message["traits"]["address"] == {"street": "1 Main St"}
    hashed = {"type": "identify", "traits": {"address": {"street": "1 Main St", "password": "hunter2"}}}
    apply_policy(hashed, classifier, PrivacyPolicy(red="block", yellow="hash"))
    assert list(hashed["traits"]["address"]) == ["street"]  # hashed, and the password is gone, not hashed


def test_a_field_named_in_a_policy_gets_its_action_whatever_a_scan_reports(registry: Registry) -> None:
    # Once a path is settled, a scan checks its values only in sampled messages: a value that
    # makes it Yellow in another message passes unreported, and the action named for the field
    # was then skipped (the named fields were looked at only when they classified Green).
    from gateway.privacy.classifier import LEARN_AFTER

    classifier = Classifier(list(registry.matchers.values()), PrivacyConfig())
    policy = PrivacyPolicy(fields={"properties.tags": "redact", "properties.note": "redact"})
    for _ in range(LEARN_AFTER + 5):
        apply_policy({"type": "track", "properties": {"tags": ["vip"], "note": "hi"}}, classifier, policy)
    leaked = 0
    for _ in range(20):
        message = {"type": "track", "properties": {"tags": ["vip", "ada@example.com"], "note": "ada@example.com"}}
        apply_policy(message, classifier, policy)
        leaked += message["properties"] != {"tags": "[REDACTED]", "note": "[REDACTED]"}
    assert leaked == 0


def test_inventory_records_paths_never_values(tmp_path: Path) -> None:
    import sqlite3
    import subprocess
    import sys

    config = tmp_path / "gateway.toml"
    config.write_text(
        config_text(tmp_path, admin=True).replace(
            f'write_key = "{WRITE_KEY}"', f'write_key = "{WRITE_KEY}"\nblock_red = true\ninventory = true'
        )
    )

    def inventory(*args: str) -> str:
        done = subprocess.run(
            [sys.executable, "-m", "gateway", "privacy", "inventory", *args, "--config", str(config)],
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert done.returncode == 0, done.stderr
        return done.stdout

    values = ["Ada@Example.COM", "hunter2", "+1 (415) 555-2671", "1 Main St", "Paris", CARD, "10.1.2.3", "gold"]
    with GatewayProcess(config) as gateway:
        for n in range(3):
            message = event() | {"messageId": f"inv-{n}"}
            assert httpx.post(f"{gateway.url}/v1/identify", auth=(WRITE_KEY, ""), json=message).status_code == 200
        wait_booked(gateway, "archive")
        # The inventory is saved every few seconds, and at the stop: stop rather than wait.
        assert gateway.stop() == 0
        lines = list(gateway.lines)
    output = inventory()
    rows = {line.split()[1]: line.split() for line in output.splitlines()}
    assert rows["traits.email"][:4] == ["web", "traits.email", "yellow", "email"]
    assert rows["traits.password"][2] == "red"  # seen, then blocked before storage
    assert rows["properties.card_on_file"][2:4] == ["red", "credit_card"]  # by value
    assert rows["traits.plan"][2:4] == ["green", "-"]
    assert rows["context.library.name"][2] == "green"
    assert "first" in rows["traits.email"] and "last" in rows["traits.email"]
    assert not any(value in output for value in values)
    conn = sqlite3.connect(tmp_path / "log.sqlite3")
    table = repr(conn.execute("SELECT * FROM privacy_inventory").fetchall())
    conn.close()
    assert "traits.email" in table and not any(value in table for value in values)
    # Each new path is logged once, with its class and hits, never its value.
    seen = [line for line in lines if '"privacy_field_seen"' in line]
    assert len(seen) == len(rows) and sum('"traits.email"' in line for line in seen) == 1
    assert not any(value in line for value in values for line in seen)
    # The command reads the file (the daemon is down).
    assert inventory("--source", "web") == output
    assert inventory("--source", "nope") == ""


def test_value_classes_are_learned_per_path_and_sticky(registry: Registry) -> None:
    from gateway.privacy.classifier import LEARN_AFTER

    learn = Classifier(list(registry.matchers.values()), PrivacyConfig())
    every = Classifier(list(registry.matchers.values()), PrivacyConfig(value_checks="every"))

    def classes(classifier: Classifier, note: str) -> dict[str, str]:
        return {f.path: f.cls for f in classifier.scan({"properties": {"note": note}})}

    # A path's first values are always checked: a card number is found at once...
    assert classes(learn, CARD) == {"properties.note": "red"}
    # ...and the path stays red (field-level class), even for a value that is not a card.
    assert classes(learn, "call me") == {"properties.note": "red"}

    fresh = Classifier(list(registry.matchers.values()), PrivacyConfig())
    for i in range(LEARN_AFTER):
        assert classes(fresh, f"order {i}") == {}
    # Settled as clean: values are only sampled now, while "every" still checks each one.
    hits = sum(1 for _ in range(50) if classes(fresh, CARD))
    assert hits < 50
    assert all(classes(every, CARD) == {"properties.note": "red"} for _ in range(50))


def _reachable_strings(root: object) -> set[str]:
    """Every string reachable from ``root`` through containers and instances (not modules,
    functions or classes: what an object holds, not the code it runs)."""
    import gc
    import types

    skip = (types.ModuleType, types.FunctionType, types.CodeType, types.BuiltinFunctionType, type)
    seen: set[int] = set()
    found: set[str] = set()
    stack = [root]
    while stack:
        obj = stack.pop()
        if id(obj) in seen or isinstance(obj, skip):
            continue
        seen.add(id(obj))
        if isinstance(obj, str):
            found.add(obj)
            continue
        if isinstance(obj, dict):  # a dict with only str keys hides them from gc.get_referents
            stack.extend(obj)
        stack.extend(gc.get_referents(obj))
    return found


@pytest.mark.parametrize("value_checks", ["learn", "every"])
def test_forget_values_leaves_no_value_of_a_message_in_memory(registry: Registry, value_checks: str) -> None:
    """A deletion request calls ``forget_values``: the checks' memory of values (emails,
    phones, ids in Green fields) must not keep a deleted user's data."""
    import random
    import uuid

    # Made at run time: no constant of this file equals them.
    email, plan = f"ann.{uuid.uuid4().hex}@example.com", uuid.uuid4().hex
    phone = f"+1 415 555 {random.randrange(1000, 9999)}"
    config = PrivacyConfig(value_checks="every" if value_checks == "every" else "learn")
    classifier = Classifier(list(registry.matchers.values()), config)
    message = {"traits": {"note": email}, "properties": {"contact": phone, "plan": plan}, "context": {}}
    for _ in range(3):
        classifier.survey(dict(message))
    assert _reachable_strings(classifier) & {email, phone, plan}  # the test sees what a cache keeps
    classifier.forget_values()
    assert not _reachable_strings(classifier) & {email, phone, plan}
