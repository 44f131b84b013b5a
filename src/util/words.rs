//! `words!`: declares a fixed set of values that Sluice writes as words
//! (audit record members, dataset statuses, problem types). Each variant's
//! word is given once and serves serde, `as_str` (metrics labels, logs,
//! problem types) and `Display`, so they cannot drift apart.

/// Declares a fixed set of values written as words: each variant's word
/// is given once and serves both serde and `as_str` (metrics labels, logs).
macro_rules! words {
    ($(#[$doc:meta])* $name:ident { $($(#[$vdoc:meta])* $variant:ident = $word:literal),+ $(,)? }) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, ::serde::Serialize, ::serde::Deserialize)]
        pub enum $name { $($(#[$vdoc])* #[serde(rename = $word)] $variant),+ }

        impl $name {
            pub const ALL: &[$name] = &[$($name::$variant),+];

            /// The word written to the trail.
            pub fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $word),+
                }
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

pub(crate) use words;
