"""The running daemon: the root nursery, applying a config (at start and on reload), the
destinations' workers and replays, the listeners, and signal handling."""
