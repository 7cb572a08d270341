"""Key matching of every built-in matcher: exact, qualified and similar keys, and near misses."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
from gateway_matcher_builtin import SPECS, KeyIndex, build_matchers
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway import MatcherType


@dataclass(frozen=True)
class Keys:
    exact: tuple[str, ...]
    close: tuple[str, ...]  # qualified or similar (Dice > 0.7) matches
    miss: tuple[str, ...]  # near misses that must not match this matcher


KEYS: dict[str, Keys] = {
    "social_security_number": Keys(
        ("ssn", "SSN", "social_security_number", "socialSecurityNumber", "Social-Security-Number", "ssn_2"),
        ("user_ssn", "social_security_numbr", "socialSecurityNumbers"),
        ("ssn_verified", "session", "social", "security_level", "social_network"),
    ),
    "password": Keys(
        ("password", "Password", "PASSWORD", "pwd", "passwd", "passphrase", "password_confirmation"),
        ("new_password", "userPassword", "passwrd", "passwords", "pasword"),
        ("passport", "pass", "passage", "word_count", "pass_type"),
    ),
    "visa": Keys(
        ("visa", "Visa", "visa_status", "visaNumber", "visa-type"),
        (),  # exact only: four letters
        ("vista", "visit", "visitor_id", "status", "payment_visa", "visas_count"),
    ),
    "veteran": Keys(
        ("veteran", "veteranStatus", "military_status"),
        ("veterans", "isVeteran", "us_veteran"),
        ("veterinarian", "vet", "event", "veteran_discount_code"),
    ),
    "disability": Keys(
        ("disability", "disabilities", "disabled", "disability_status", "handicap"),
        ("has_disability", "disabilty"),
        ("ability", "availability", "disable_tracking", "stability"),
    ),
    "credit_card": Keys(
        ("creditCard", "credit_card", "credit-card-number", "cardNumber", "cvv", "cvc", "ccn"),
        ("billing_card_number", "credit_cards", "credit_crd", "creditcards"),
        ("credit", "card", "credit_card_type", "card_brand", "gift_card_balance", "discount", "cc"),
    ),
    "passport": Keys(
        ("passport", "passportNumber", "passport_no", "Passport-ID"),
        ("passports", "pasport", "traveler_passport"),
        ("password", "sport", "transport", "pass", "passenger"),
    ),
    "token": Keys(
        ("token", "tokens", "accessToken", "access_token", "api_key", "apiKey", "client_secret", "jwt"),
        ("deviceToken", "csrf_token", "stripe_secret", "push_token", "webhookSecret"),
        ("tokenized", "broken", "take", "token_count", "secretary", "key", "session_id"),
    ),
    "iban": Keys(
        ("iban", "IBAN", "bank_account", "bankAccountNumber"),
        ("payout_iban", "customer_bank_account"),
        ("bank", "bank_name", "account", "account_id", "ibis"),
    ),
    "email": Keys(
        ("email", "Email", "EMAIL", "e-mail", "e_mail", "emailAddress", "email_address", "email_2", "emails"),
        ("user_email", "workEmail", "contact-email", "billing_email_address"),
        ("email_verified", "email_count", "emailOptIn", "mail", "gmail", "female", "emailing"),
    ),
    "phone": Keys(
        ("phone", "Phone", "phoneNumber", "phone_number", "telephone", "tel", "mobilePhone", "phone2", "fax"),
        ("home_phone", "work_phone_number", "contactPhone", "telephones", "telephon"),
        ("iphone", "iPhone", "phone_verified", "phonetic", "headphones", "telemetry", "phoneme"),
    ),
    "address": Keys(
        ("address", "Address", "homeAddress", "shipping_address", "postal-address", "address1"),
        ("delivery_address", "addresses", "adress", "primaryAddress"),
        ("ip_address", "mac_address", "email_address", "wallet_address", "remote_address", "dress", "add"),
    ),
    "street": Keys(
        ("street", "streetAddress", "street_address", "address_line_1", "addressLine2", "address2"),
        ("billing_street", "shippingStreet"),
        ("street_view", "streetwear", "strength", "st", "tree"),
    ),
    "city": Keys(
        ("city", "City", "CITY", "hometown", "town"),
        ("billing_city", "shippingCity", "home-city"),
        ("capacity", "velocity", "city_id", "ethnicity", "cityscape", "pity"),
    ),
    "zipcode": Keys(
        ("zipcode", "zip", "zipCode", "ZIP_CODE", "postal_code", "postalCode", "postcode", "zip4"),
        ("billing_zip", "shipping_postal_code", "zipcodes", "home_postcode"),
        ("zip_file", "zipped", "postal_service", "code", "tip", "zipper"),
    ),
    "name": Keys(
        (
            "name",
            "Name",
            "firstName",
            "first_name",
            "First-Name",
            "first.name",
            "lastName",
            "last_name",
            "fullName",
            "full_name",
            "surname",
            "displayName",
            "given_name",
            "nickname",
            "name_2",
        ),
        ("firstname", "FIRSTNAME", "LastName"),  # compact forms of terms
        (
            "page_name",
            "product_name",
            "event_name",
            "company_name",
            "campaign_name",
            "plan_name",
            "username",
            "hostname",
            "filename",
            "rename",
            "names_count",
            "game",
            "screen_name",
        ),
    ),
    "birthdate": Keys(
        ("birthdate", "birthday", "dateOfBirth", "date_of_birth", "dob", "DOB", "birth_date", "birthDate"),
        ("birthdates", "birth_dat", "birthdayy", "birthdate_2"),
        ("birthplace", "date", "created_date", "birth", "dobby"),
    ),
    "gender": Keys(
        ("gender", "Gender", "genderIdentity", "gender_identity"),
        (),
        ("render", "sender", "gendered", "tender", "agenda"),
    ),
    "sex": Keys(
        ("sex", "Sex", "sex_at_birth"),
        (),
        ("essex", "sexes_count", "six", "sexual_orientation"),
    ),
    "ethnicity": Keys(
        ("ethnicity", "Ethnicity", "ethnic_group", "ethnicOrigin"),
        ("ethnicities", "ethnicty", "ethnicitys"),
        ("ethics", "city", "electricity", "ethernet"),
    ),
    "race": Keys(
        ("race", "Race", "racial_identity"),
        (),
        ("trace", "grace", "trace_id", "traceId", "races_won", "racer", "brace"),
    ),
    "religion": Keys(
        ("religion", "Religion", "religious_affiliation", "faith"),
        ("religions", "religon", "religious"),
        ("region", "legion", "affiliation", "relation"),
    ),
    "citizenship": Keys(
        ("citizenship", "Citizenship", "nationality", "country_of_citizenship"),
        ("us_citizen", "citizenships", "citizenshp"),
        ("city", "relationship", "citizens_band_radio"),
    ),
    "ip": Keys(
        ("ip", "IP", "ipAddress", "ip_address", "IPAddress", "ipv4", "ipV6", "ip_v4", "remote_addr"),
        ("client_ip", "remoteIp", "user_ip_address", "server-ip"),
        ("tip", "zip", "ipo", "ship", "vip", "description", "mac_address", "email_address"),
    ),
    "mac": Keys(
        ("mac", "MAC", "macAddress", "mac_address", "mac-addr"),
        ("device_mac", "wifi_mac_address", "bluetoothMac"),
        ("machine", "mach", "imac", "macro", "max", "ip_address"),
    ),
    "salary": Keys(
        ("salary", "Salary", "income", "wages", "annual_salary", "compensation"),
        ("base_salary", "household_income", "salaries"),
        ("sale", "salad", "outcome", "salary_currency", "sales"),
    ),
    "photo": Keys(
        ("photo", "Photo", "avatar", "profilePicture", "profile_photo", "photo_url", "selfie"),
        ("user_avatar", "passport_photo", "id_photo"),
        ("photo_count", "phone", "image_url", "photography_course", "photon"),
    ),
    "license": Keys(
        ("license", "licence", "driversLicense", "driver_license", "license_number", "licensePlate"),
        ("licenses", "license_no", "fishing_license", "licnse"),
        ("lice", "silence", "lien", "license_plate_state_code"),
    ),
    "serial": Keys(
        ("serial", "Serial", "serialNumber", "serial_number", "serial_no"),
        ("device_serial", "deviceSerialNumber"),
        ("serialized", "series", "cereal", "serial_format_version"),
    ),
    "identification": Keys(
        ("identification", "idNumber", "id_number", "national_id", "nationalId", "tax_id", "government-id"),
        ("identifcation", "identifications", "identification_2"),
        ("id", "identifier", "identity", "user_id", "product_id", "identify", "identified"),
    ),
    "certificate": Keys(
        ("certificate", "certificateNumber", "certificate_id"),
        ("certificates", "certficate", "certificat"),
        ("certified", "certainty", "cert", "certificate_authority_url"),
    ),
    "medication": Keys(
        ("medication", "medications", "medicine", "prescription", "prescriptions"),
        ("medicaton", "current_medication", "medicines"),
        ("description", "meditation", "dedication", "media", "medical_history_url"),
    ),
    "allergy": Keys(
        ("allergy", "allergies", "Allergens", "allergen"),
        ("allergys", "food_allergy", "food_allergies"),
        ("alert", "energy", "gallery", "allegory"),
    ),
    "condition": Keys(
        ("condition", "conditions", "medicalCondition", "medical_condition", "health_conditions"),
        (),  # exact only: "condition" is also a product's
        ("product_condition", "conditional", "weather_condition", "terms_and_conditions", "condition_code"),
    ),
    "diagnosis": Keys(
        ("diagnosis", "diagnoses", "diagnosisCode", "icd_code", "icd10_code"),
        ("diagnosys", "primary_diagnosis", "diagnosises"),
        ("diagnostic", "diagnostics_enabled", "analysis", "prognosis"),
    ),
    "procedure": Keys(
        ("procedure", "procedures", "medical_procedure", "surgery"),
        (),  # exact only: "procedure" is a common word
        ("process", "procedure_id", "produce", "stored_procedure", "proceed"),
    ),
    "sexual_orientation": Keys(
        ("sexual_orientation", "sexualOrientation", "Sexual-Orientation", "sexuality", "sexual_preference"),
        ("sexual_orientations", "sexual_orientaton", "user_sexual_orientation"),
        ("orientation", "screen_orientation", "device_orientation", "sexual", "sex"),
    ),
}

# Keys that Segment's spec and common tracking plans use for non-personal data: no matcher matches.
NOT_PERSONAL = [
    "event", "plan", "revenue", "currency", "product_id", "title", "url", "value", "path", "referrer", "search",
    "keywords", "category", "sku", "price", "quantity", "coupon", "discount", "order_id", "checkout_id",
    "affiliation", "shipping", "tax", "total", "subtotal", "brand", "variant", "position", "image_url", "library",
    "version", "locale", "timezone", "userAgent", "channel", "width", "height", "density", "build", "namespace",
    "source", "medium", "term", "content", "carrier", "bluetooth", "wifi", "cellular", "manufacturer", "model",
    "type", "active", "groupId", "anonymousId", "messageId", "timestamp", "sentAt", "receivedAt", "createdAt",
    "description", "website", "company", "industry", "employees", "page_name", "product_name", "event_name",
    "campaign_name", "company_name", "plan_name", "step", "option", "payment_method", "list_id", "query",
    "cart_id", "share_via", "trace_id", "traceId", "render_time", "sender", "id", "userId", "user_id", "username",
    "country", "state", "age", "advertisingId", "adTrackingEnabled", "utm_source", "utm_campaign", "button_text",
    "label", "action", "properties", "traits", "context", "integrations", "session_id", "sessionId", "duration",
    "count", "amount", "status", "score", "rating", "review_id", "products", "promotion_id", "creative",
    "filename", "hostname", "domain", "email_verified", "phone_verified", "zip_file", "tracking_number",
    "shipment_id", "delivery_date", "order_date", "lifetime_value", "plan_type", "subscription_id", "invoice_id",
    "orderNumber", "numberOfItems", "landing_page", "screen_name", "device_type", "os_name", "app_name",
    "app_version", "network_carrier", "platform", "browser", "language", "experiment", "variation", "feature_flag",
    "orientation",
]  # fmt: skip


@pytest.fixture(scope="module")
def index() -> KeyIndex:
    return KeyIndex(SPECS, cache_size=0)


@pytest.fixture(scope="module")
def matchers() -> dict[str, MatcherType]:
    return {m.name: m for m in build_matchers()}


def test_every_matcher_has_key_examples() -> None:
    assert set(KEYS) == {spec.name for spec in SPECS}
    for name, keys in KEYS.items():
        assert keys.exact and keys.miss, name


@pytest.mark.parametrize("name", sorted(KEYS))
def test_exact_keys_match(name: str, matchers: dict[str, MatcherType], index: KeyIndex) -> None:
    for key in KEYS[name].exact:
        assert matchers[name].match_key(key), key
        assert index.explain(key)[name].kind == "exact", key


@pytest.mark.parametrize("name", sorted(KEYS))
def test_qualified_and_similar_keys_match(name: str, matchers: dict[str, MatcherType], index: KeyIndex) -> None:
    for key in KEYS[name].close:
        assert matchers[name].match_key(key), key
        assert index.explain(key)[name].kind in ("exact", "qualified", "similar"), key


@pytest.mark.parametrize("name", sorted(KEYS))
def test_near_misses_do_not_match(name: str, matchers: dict[str, MatcherType]) -> None:
    for key in KEYS[name].miss:
        assert not matchers[name].match_key(key), key


@pytest.mark.parametrize("key", NOT_PERSONAL)
def test_common_non_personal_keys_match_nothing(key: str, index: KeyIndex) -> None:
    assert index.explain(key) == {}


@pytest.mark.parametrize(
    ("key", "expected"),
    [
        ("mac_address", {"mac"}),  # not also a similar "ip" (Dice 0.8 with "ip address")
        ("email_address", {"email"}),  # not ip (0.71) nor a postal address (excluded)
        ("ip_address", {"ip"}),
        ("client_ip_address", {"ip"}),
        ("street_address", {"street", "address"}),
        ("address1", {"street", "address"}),
        ("password", {"password"}),
        ("passport", {"passport"}),
        ("sexual_orientation", {"sexual_orientation"}),
    ],
)
def test_keys_that_look_alike_go_to_the_right_matchers(key: str, expected: set[str], index: KeyIndex) -> None:
    assert set(index.hits(key)) == expected


def test_the_name_rule_is_about_the_keys_own_name(index: KeyIndex) -> None:
    # A person's name is identified by the key itself; a compound key ending in "name" names
    # something else unless it is one of the listed person-name terms.
    assert index.hits("name") == {"name"}
    assert index.hits("contact_name") == {"name"}
    for key in ("page_name", "productName", "event-name", "company.name"):
        assert index.hits(key) == frozenset(), key


def test_similar_needs_dice_above_the_threshold_and_comparable_lengths(index: KeyIndex) -> None:
    from gateway_matcher_builtin import key_similarity

    # Over 0.7 and of comparable length (typos, plurals): similar.
    assert index.explain("passwrd")["password"].kind == "similar"
    assert index.explain("addresses")["address"].score == pytest.approx(12 / 13)
    # Over 0.7 but a piece of the term or the term plus a word: not similar (README.md).
    for key, term in [
        ("credit", "credit card"),
        ("dress", "address"),
        ("address_count", "address"),
        ("sport", "passport"),
        ("password_reset_at", "password"),
    ]:
        assert key_similarity(key, term) > 0.7, key
        assert index.hits(key) == frozenset(), key
    # What the rule still lets through, as Segment's does: a term with a suffix.
    assert index.explain("licensed")["license"].kind == "similar"


def test_key_decisions_are_cached_and_the_cache_can_be_off() -> None:
    cached = KeyIndex(SPECS)
    first = cached.hits("billingAddress")
    assert cached.hits("billingAddress") is first  # the same frozenset object: from the cache
    uncached = KeyIndex(SPECS, cache_size=0)
    assert uncached.hits("billingAddress") == first
    assert uncached.hits("billingAddress") is not uncached.hits("billingAddress")
    long_key = "x" * 300 + "_email"
    assert cached.hits(long_key) == {"email"}  # long keys are decided, just not cached


def test_odd_keys_do_not_raise(matchers: dict[str, MatcherType]) -> None:
    for key in ("", "_", "...", "  ", "1", "12345", "ñandú", "名前", "\x00", "a" * 10_000, "EMAIL!!!"):
        for matcher in matchers.values():
            assert matcher.match_key(key) in (True, False)
    assert matchers["email"].match_key("EMAIL!!!")
    for bad in (None, 3, ["email"]):
        assert matchers["email"].match_key(bad) is False  # type: ignore[arg-type]


def brute_force(key: str) -> dict[str, object]:
    """The decision without the index's pruning: every matcher's terms, then the precedence rule."""
    found = {spec.name: m for spec in SPECS if (m := spec.key_terms.match(key)) is not None}
    if any(m.kind != "similar" for m in found.values()):
        found = {name: m for name, m in found.items() if m.kind != "similar"}
    return found


ALL_EXAMPLE_KEYS = sorted(
    {k for keys in KEYS.values() for k in (*keys.exact, *keys.close, *keys.miss)}
    | set(NOT_PERSONAL)
    | {t for spec in SPECS for t in spec.terms}
)


def test_the_index_prunes_without_changing_decisions(index: KeyIndex) -> None:
    cached = build_matchers()
    uncached = build_matchers(cache_size=0)
    for key in ALL_EXAMPLE_KEYS:
        expected = brute_force(key)
        assert index.explain(key) == expected, key
        assert {m.name for m in cached if m.match_key(key)} == set(expected), key
        assert {m.name for m in uncached if m.match_key(key)} == set(expected), key


@settings(max_examples=500, deadline=None)
@given(
    key=st.text(max_size=30)
    | st.lists(st.sampled_from([*ALL_EXAMPLE_KEYS[:200], "x", "my", "2", "Id"]), min_size=1, max_size=3).map("_".join)
    | st.sampled_from(ALL_EXAMPLE_KEYS).map(lambda k: k[:-1] + "x")
)
def test_the_index_agrees_with_brute_force_on_any_key(key: str) -> None:
    assert KeyIndex(SPECS, cache_size=0).explain(key) == brute_force(key)
