//! Crush's session database: read conversations safely while Crush writes, restore missing sessions.
