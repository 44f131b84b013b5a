//! The `hash` mask: keyed HMAC-SHA-256 pseudonyms. Each project (a grant's
//! `project`, else its id; `public` for tier access) gets its own key,
//! derived from the server's secret, so the same value gets the same
//! pseudonym within a project and unlinkable ones across projects. Without
//! the secret, pseudonyms cannot be reversed by hashing guesses.

use std::path::Path;
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, StringArray};
use arrow::datatypes::DataType;
use datafusion::common::{DataFusionError, Result};
use datafusion::logical_expr::{
    ColumnarValue, Expr, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature, Volatility,
};
use hmac::{Hmac, Mac};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

/// The server's pseudonymisation secret (32 random bytes).
#[derive(Clone)]
pub struct Secret([u8; 32]);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(..)")
    }
}

impl Secret {
    /// A secret from known bytes (tests).
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }

    /// Reads `<state>/pseudonym-secret`, creating it (mode 0600) on first
    /// use. Read once at start: pseudonyms, and the keys that seal what
    /// replicas share (personal tokens, sessions), derive from it.
    pub fn load_or_create(state_dir: &Path) -> std::io::Result<Self> {
        crate::util::key_file::load_or_create(&state_dir.join("pseudonym-secret")).map(Self)
    }

    /// The key of one project.
    fn project_key(&self, project: &str) -> [u8; 32] {
        #[allow(clippy::expect_used, reason = "HMAC takes keys of any length")]
        let mut mac = HmacSha256::new_from_slice(&self.0).expect("HMAC takes keys of any length");
        mac.update(b"sluice-pseudonym-v1:");
        mac.update(project.as_bytes());
        mac.finalize().into_bytes().into()
    }

    /// A key for another use of the secret, kept apart from every
    /// project's pseudonym key by its label.
    pub(super) fn derived(&self, label: &str) -> [u8; 32] {
        self.project_key(&format!("\u{0}{label}"))
    }

    /// The key web sessions' records, CSRF tokens and sign-in cookies are
    /// sealed under (replicas share it, so each honours the others').
    pub fn session_key(&self) -> [u8; 32] {
        self.derived("web-sessions")
    }

    /// The key personal tokens' records are sealed under (replicas share
    /// the secret, so each checks the others' records).
    pub fn token_seal_key(&self) -> [u8; 32] {
        self.derived("personal-tokens")
    }

    /// The key uploads' data profiles hash sampled values under.
    pub fn profile_key(&self) -> crate::catalog::profile::ProfileKey {
        use crate::catalog::profile::ProfileKey;
        ProfileKey::from_derived(self.derived(ProfileKey::LABEL))
    }

    /// An expression replacing `input` by its pseudonym within `project`.
    pub fn pseudonym(&self, project: &str, input: Expr) -> Expr {
        let udf = ScalarUDF::new_from_impl(Pseudonym {
            key: self.project_key(project),
            signature: Signature::any(1, Volatility::Immutable),
        });
        udf.call(vec![input])
    }
}

#[derive(Debug, PartialEq, Eq, Hash)]
struct Pseudonym {
    key: [u8; 32],
    signature: Signature,
}

/// Hex of the first 16 bytes (128 bits) of HMAC-SHA-256(key, text).
fn pseudonym_of(key: &[u8; 32], text: &str) -> String {
    #[allow(clippy::expect_used, reason = "HMAC takes keys of any length")]
    let mut mac = HmacSha256::new_from_slice(key).expect("HMAC takes keys of any length");
    mac.update(text.as_bytes());
    let digest = mac.finalize().into_bytes();
    digest[..16].iter().map(|b| format!("{b:02x}")).collect()
}

impl ScalarUDFImpl for Pseudonym {
    fn name(&self) -> &str {
        "sluice_pseudonym"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _: &[DataType]) -> Result<DataType> {
        Ok(DataType::Utf8)
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let [input] = args.args.as_slice() else {
            return Err(DataFusionError::Internal(
                "pseudonym takes one argument".into(),
            ));
        };
        let array = input.to_array(args.number_rows)?;
        let text = arrow::compute::cast(&array, &DataType::Utf8)?;
        let text = text
            .as_any()
            .downcast_ref::<StringArray>()
            .ok_or_else(|| DataFusionError::Internal("cast to Utf8".into()))?;
        let out: StringArray = (0..text.len())
            .map(|i| (!text.is_null(i)).then(|| pseudonym_of(&self.key, text.value(i))))
            .collect();
        Ok(ColumnarValue::Array(Arc::new(out) as ArrayRef))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pseudonyms_are_stable_within_a_project_and_differ_across() {
        let secret = Secret([7; 32]);
        let a = secret.project_key("study-a");
        let b = secret.project_key("study-b");
        assert_eq!(
            pseudonym_of(&a, "P000000001"),
            pseudonym_of(&a, "P000000001")
        );
        assert_ne!(
            pseudonym_of(&a, "P000000001"),
            pseudonym_of(&b, "P000000001")
        );
        assert_ne!(
            pseudonym_of(&a, "P000000001"),
            pseudonym_of(&a, "P000000002")
        );
        assert_eq!(pseudonym_of(&a, "x").len(), 32);
    }

    proptest::proptest! {
        #[test]
        fn a_pseudonym_never_contains_its_input(value in "[A-Za-z0-9]{3,20}") {
            let key = Secret([1; 32]).project_key("p");
            let p = pseudonym_of(&key, &value);
            proptest::prop_assert!(!p.contains(&value) || value.chars().all(|c| c.is_ascii_hexdigit()));
        }
    }
}
