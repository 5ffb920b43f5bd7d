//! Identifiers: ULIDs (job, event and session ids) with the strict parsing of api.md §1, and the validated name
//! types (identity ids, path variables, binary names). Parsing is the only way in, so a value of these types always
//! satisfies its rule.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Crockford base32 alphabet without the aliases `I L O U`.
const ALPHABET: &[u8; 32] = b"0123456789ABCDEFGHJKMNPQRSTVWXYZ";

/// A 128-bit ULID: 48 bits of Unix milliseconds, then 80 random bits.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Ulid(u128);

/// Why a string is not a ULID.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum UlidError {
    #[error("expected 26 characters")]
    Length,
    #[error("character outside Crockford base32 (aliases I, L, O, U are refused)")]
    Character,
    #[error("first character above 7 overflows 128 bits")]
    Overflow,
}

impl Ulid {
    pub const MAX: Ulid = Ulid(u128::MAX);
    pub const NIL: Ulid = Ulid(0);

    /// A ULID from a millisecond timestamp and random bits (only the low 80 bits are used).
    pub fn from_parts(timestamp_ms: u64, random: u128) -> Ulid {
        let time = u128::from(timestamp_ms & 0xFFFF_FFFF_FFFF) << 80;
        Ulid(time | (random & ((1u128 << 80) - 1)))
    }

    /// A fresh ULID for the given Unix millisecond time, with random low bits.
    pub fn with_time_ms(timestamp_ms: u64) -> Ulid {
        Ulid::from_parts(timestamp_ms, rand::random::<u128>())
    }

    /// A fresh ULID for the current wall-clock time.
    pub fn generate() -> Ulid {
        Ulid::with_time_ms(now_ms())
    }

    pub fn from_u128(value: u128) -> Ulid {
        Ulid(value)
    }

    pub fn as_u128(self) -> u128 {
        self.0
    }

    pub fn timestamp_ms(self) -> u64 {
        (self.0 >> 80) as u64
    }

    /// Big-endian bytes: their byte order is the ULID order, which the store's keys rely on.
    pub fn to_bytes(self) -> [u8; 16] {
        self.0.to_be_bytes()
    }

    pub fn from_bytes(bytes: [u8; 16]) -> Ulid {
        Ulid(u128::from_be_bytes(bytes))
    }

    /// The next ULID in order, or `None` at the maximum.
    pub fn successor(self) -> Option<Ulid> {
        self.0.checked_add(1).map(Ulid)
    }

    /// Strict parse: 26 characters, either case, first character `0`–`7`, no Crockford aliases.
    pub fn parse(text: &str) -> Result<Ulid, UlidError> {
        let bytes = text.as_bytes();
        if bytes.len() != 26 {
            return Err(UlidError::Length);
        }
        let mut value: u128 = 0;
        for (idx, &byte) in bytes.iter().enumerate() {
            let digit = decode_char(byte).ok_or(UlidError::Character)?;
            if idx == 0 && digit > 7 {
                return Err(UlidError::Overflow);
            }
            value = (value << 5) | u128::from(digit);
        }
        Ok(Ulid(value))
    }
}

fn decode_char(byte: u8) -> Option<u8> {
    let upper = byte.to_ascii_uppercase();
    ALPHABET.iter().position(|&c| c == upper).map(|pos| pos as u8)
}

/// Current Unix time in milliseconds (0 if the clock is before 1970).
pub fn now_ms() -> u64 {
    let now = time::OffsetDateTime::now_utc();
    u64::try_from(now.unix_timestamp_nanos() / 1_000_000).unwrap_or(0)
}

impl fmt::Display for Ulid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut out = [0u8; 26];
        let mut value = self.0;
        for slot in out.iter_mut().rev() {
            *slot = ALPHABET[(value & 0x1F) as usize];
            value >>= 5;
        }
        // The alphabet is ASCII, so this cannot fail.
        f.write_str(std::str::from_utf8(&out).map_err(|_| fmt::Error)?)
    }
}

impl fmt::Debug for Ulid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{self}")
    }
}

impl FromStr for Ulid {
    type Err = UlidError;
    fn from_str(text: &str) -> Result<Ulid, UlidError> {
        Ulid::parse(text)
    }
}

impl Serialize for Ulid {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Ulid {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Ulid, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = Ulid;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a ULID string")
            }
            fn visit_str<E: serde::de::Error>(self, value: &str) -> Result<Ulid, E> {
                Ulid::parse(value).map_err(|err| E::custom(format!("invalid ULID '{value}': {err}")))
            }
        }
        deserializer.deserialize_str(Visitor)
    }
}

/// Hands out strictly increasing ULIDs: each is the later of a fresh ULID and the previous one + 1 (storage.md §4.3).
#[derive(Debug, Default, Clone)]
pub struct UlidGenerator {
    last: Ulid,
}

impl UlidGenerator {
    pub fn new() -> UlidGenerator {
        UlidGenerator::default()
    }

    /// Never hands out a value at or below `floor` afterwards.
    pub fn observe(&mut self, floor: Ulid) {
        if floor > self.last {
            self.last = floor;
        }
    }

    pub fn next_at(&mut self, timestamp_ms: u64) -> Ulid {
        let fresh = Ulid::with_time_ms(timestamp_ms);
        let next = match self.last.successor() {
            Some(bumped) if bumped > fresh => bumped,
            _ => fresh,
        };
        self.last = next;
        next
    }

    #[allow(clippy::should_implement_trait)] // never ends, so it is not an Iterator; callers use this name already
    pub fn next(&mut self) -> Ulid {
        self.next_at(now_ms())
    }
}

macro_rules! ulid_newtype {
    ($(#[$meta:meta])* $name:ident) => {
        $(#[$meta])*
        #[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        #[serde(transparent)]
        #[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
        #[cfg_attr(feature = "openapi", schema(value_type = String, example = "01JDQ3V6K9Z8Y7X6W5V4T3S2R1"))]
        pub struct $name(pub Ulid);

        impl $name {
            pub fn parse(text: &str) -> Result<$name, UlidError> {
                Ulid::parse(text).map($name)
            }
            pub fn ulid(self) -> Ulid {
                self.0
            }
            pub fn to_bytes(self) -> [u8; 16] {
                self.0.to_bytes()
            }
            pub fn from_bytes(bytes: [u8; 16]) -> $name {
                $name(Ulid::from_bytes(bytes))
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Display::fmt(&self.0, f)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Display::fmt(&self.0, f)
            }
        }

        impl FromStr for $name {
            type Err = UlidError;
            fn from_str(text: &str) -> Result<$name, UlidError> {
                $name::parse(text)
            }
        }
    };
}

ulid_newtype!(
    /// A job's id: a ULID, time-ordered, so newer jobs sort later.
    JobId
);
ulid_newtype!(
    /// An event's id, also the cursor of every job stream.
    EventId
);
ulid_newtype!(
    /// A worker session's id.
    SessionId
);

/// Why a name is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    #[error("must be 1–64 characters")]
    Length,
    #[error("contains a character outside its alphabet")]
    Character,
    #[error("must start with a letter or digit")]
    Start,
}

/// Identity ids (`client_id`): 1–64 characters `[A-Za-z0-9._@-]`, first a letter or digit (auth.md §1).
pub fn check_identity_id(text: &str) -> Result<(), NameError> {
    if text.is_empty() || text.len() > 64 {
        return Err(NameError::Length);
    }
    if !text.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'@' | b'-')) {
        return Err(NameError::Character);
    }
    if !text.as_bytes()[0].is_ascii_alphanumeric() {
        return Err(NameError::Start);
    }
    Ok(())
}

/// Path variable and binary names: 1–64 characters `[A-Za-z0-9_.-]` (limits-and-bad-input.md §2.2).
pub fn check_simple_name(text: &str) -> Result<(), NameError> {
    if text.is_empty() || text.len() > 64 {
        return Err(NameError::Length);
    }
    if !text.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-')) {
        return Err(NameError::Character);
    }
    Ok(())
}

/// The identity name reserved for the coordinator itself (`sender_id` of janitor-made messages).
pub const RESERVED_IDENTITY: &str = "coordinator";

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn parses_either_case_and_prints_upper() {
        let id = Ulid::parse("01jdq3v6k9z8y7x6w5v4t3s2r1").unwrap();
        assert_eq!(id.to_string(), "01JDQ3V6K9Z8Y7X6W5V4T3S2R1");
    }

    #[test]
    fn refuses_aliases_overflow_and_length() {
        assert_eq!(Ulid::parse("01JDQ3V6K9Z8Y7X6W5V4T3S2RI"), Err(UlidError::Character));
        assert_eq!(Ulid::parse("01JDQ3V6K9Z8Y7X6W5V4T3S2RL"), Err(UlidError::Character));
        assert_eq!(Ulid::parse("01JDQ3V6K9Z8Y7X6W5V4T3S2RO"), Err(UlidError::Character));
        assert_eq!(Ulid::parse("01JDQ3V6K9Z8Y7X6W5V4T3S2RU"), Err(UlidError::Character));
        assert_eq!(Ulid::parse("8ZZZZZZZZZZZZZZZZZZZZZZZZZ"), Err(UlidError::Overflow));
        assert_eq!(Ulid::parse("7ZZZZZZZZZZZZZZZZZZZZZZZZZ"), Ok(Ulid::MAX));
        assert_eq!(Ulid::parse("01JDQ3V6K9Z8Y7X6W5V4T3S2R"), Err(UlidError::Length));
        assert_eq!(Ulid::parse(""), Err(UlidError::Length));
        assert_eq!(Ulid::parse("01JDQ3V6K9Z8Y7X6W5V4T3S2R-"), Err(UlidError::Character));
    }

    #[test]
    fn generator_is_strictly_increasing_even_if_the_clock_steps_back() {
        let mut generator = UlidGenerator::new();
        let a = generator.next_at(1_000_000);
        let b = generator.next_at(999_000);
        let c = generator.next_at(999_000);
        assert!(a < b && b < c, "{a} {b} {c}");
        let floor = Ulid::from_parts(2_000_000, 5);
        generator.observe(floor);
        let d = generator.next_at(1);
        assert!(d > floor && d > c);
    }

    #[test]
    fn identity_and_simple_names() {
        assert!(check_identity_id("client01").is_ok());
        assert!(check_identity_id("a.b_c@d-e").is_ok());
        assert_eq!(check_identity_id("-x"), Err(NameError::Start));
        assert_eq!(check_identity_id("a b"), Err(NameError::Character));
        assert_eq!(check_identity_id(&"a".repeat(65)), Err(NameError::Length));
        assert!(check_simple_name("Media").is_ok());
        assert!(check_simple_name("ffmpeg").is_ok());
        assert_eq!(check_simple_name("a/b"), Err(NameError::Character));
        assert_eq!(check_simple_name("a@b"), Err(NameError::Character));
        assert_eq!(check_simple_name(""), Err(NameError::Length));
    }

    proptest! {
        #[test]
        fn display_parse_round_trip(value in any::<u128>()) {
            let id = Ulid::from_u128(value);
            prop_assert_eq!(Ulid::parse(&id.to_string()), Ok(id));
            prop_assert_eq!(Ulid::from_bytes(id.to_bytes()), id);
        }

        #[test]
        fn byte_order_is_ulid_order(a in any::<u128>(), b in any::<u128>()) {
            let (x, y) = (Ulid::from_u128(a), Ulid::from_u128(b));
            prop_assert_eq!(x.cmp(&y), x.to_bytes().cmp(&y.to_bytes()));
        }

        #[test]
        fn parse_never_panics(text in "\\PC{0,40}") {
            let _ = Ulid::parse(&text);
        }
    }
}
