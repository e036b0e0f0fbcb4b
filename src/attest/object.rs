//! The attestation object (WebAuthn §6.5, as draft-ietf-acme-device-attest uses it): a CBOR
//! map `{"fmt": text, "attStmt": map, "authData": bytes}`. Parsing only; each format judges
//! its own statement.

use ciborium::Value;

use super::{AttestError, MAX_OBJECT_LEN};

#[derive(Debug, Clone)]
pub struct AttestationObject {
    pub fmt: String,
    /// The format's statement, a CBOR map keyed by text.
    pub statement: Vec<(String, Value)>,
    /// Authenticator data; Apple sends none (absent or empty).
    pub auth_data: Vec<u8>,
}

impl AttestationObject {
    pub fn parse(bytes: &[u8]) -> Result<Self, AttestError> {
        let bad = |m: &str| AttestError::Malformed(m.to_owned());
        if bytes.is_empty() {
            return Err(bad("empty"));
        }
        if bytes.len() > MAX_OBJECT_LEN {
            return Err(AttestError::Malformed(format!(
                "{} bytes, more than the {MAX_OBJECT_LEN} accepted",
                bytes.len()
            )));
        }
        let mut reader = bytes;
        let value: Value = ciborium::from_reader(&mut reader)
            .map_err(|e| AttestError::Malformed(format!("not valid CBOR: {e}")))?;
        if !reader.is_empty() {
            return Err(bad("trailing bytes after the CBOR map"));
        }
        let Value::Map(entries) = value else {
            return Err(bad("not a CBOR map"));
        };
        let (mut fmt, mut statement, mut auth_data) = (None, None, Vec::new());
        for (k, v) in entries {
            let Value::Text(k) = k else {
                return Err(bad("a key is not text"));
            };
            match (k.as_str(), v) {
                ("fmt", Value::Text(f)) if fmt.is_none() => fmt = Some(f),
                ("attStmt", Value::Map(m)) if statement.is_none() => {
                    statement = Some(text_keyed(m)?)
                }
                ("authData", Value::Bytes(b)) => auth_data = b,
                ("fmt" | "attStmt" | "authData", _) => {
                    return Err(AttestError::Malformed(format!(
                        "`{k}` is repeated or of the wrong CBOR type"
                    )));
                }
                // Unknown members are ignored, as WebAuthn extensions are.
                _ => {}
            }
        }
        Ok(Self {
            fmt: fmt.ok_or_else(|| bad("no `fmt`"))?,
            statement: statement.ok_or_else(|| bad("no `attStmt`"))?,
            auth_data,
        })
    }

    /// A statement member.
    pub fn member(&self, name: &str) -> Option<&Value> {
        self.statement
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v)
    }
}

fn text_keyed(map: Vec<(Value, Value)>) -> Result<Vec<(String, Value)>, AttestError> {
    map.into_iter()
        .map(|(k, v)| match k {
            Value::Text(k) => Ok((k, v)),
            _ => Err(AttestError::Malformed(
                "an `attStmt` key is not text".into(),
            )),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cbor(v: &Value) -> Vec<u8> {
        let mut out = Vec::new();
        ciborium::into_writer(v, &mut out).unwrap();
        out
    }

    fn object(fmt: Value, stmt: Value) -> Value {
        Value::Map(vec![
            (Value::Text("fmt".into()), fmt),
            (Value::Text("attStmt".into()), stmt),
        ])
    }

    #[test]
    fn a_well_formed_object_parses() {
        let stmt = Value::Map(vec![(
            Value::Text("x5c".into()),
            Value::Array(vec![Value::Bytes(vec![1, 2])]),
        )]);
        let o =
            AttestationObject::parse(&cbor(&object(Value::Text("apple".into()), stmt))).unwrap();
        assert_eq!(o.fmt, "apple");
        assert!(o.member("x5c").is_some());
        assert!(o.auth_data.is_empty());
    }

    #[test]
    fn malformed_objects_are_refused_with_the_reason() {
        let good = cbor(&object(Value::Text("apple".into()), Value::Map(vec![])));
        let cases: Vec<(Vec<u8>, &str)> = vec![
            (vec![], "empty"),
            (good[..good.len() - 3].to_vec(), "not valid CBOR"),
            ([good.clone(), vec![0]].concat(), "trailing"),
            (cbor(&Value::Array(vec![])), "not a CBOR map"),
            (
                cbor(&object(Value::Integer(1.into()), Value::Map(vec![]))),
                "`fmt`",
            ),
            (
                cbor(&object(Value::Text("apple".into()), Value::Bool(true))),
                "`attStmt`",
            ),
            (
                cbor(&Value::Map(vec![(
                    Value::Text("fmt".into()),
                    Value::Text("apple".into()),
                )])),
                "no `attStmt`",
            ),
            (vec![0u8; MAX_OBJECT_LEN + 1], "more than"),
        ];
        for (bytes, why) in cases {
            let err = AttestationObject::parse(&bytes).unwrap_err().to_string();
            assert!(err.contains(why), "{why}: {err}");
        }
    }
}
