//! A field that wants text takes text: YAML reads `variant: true` or
//! `name: 123` as a boolean or a number, and the parser would quietly turn
//! it into the string "true" or "123". Schema-free: the typed spec, written
//! back out, is held against the document as written; wherever the author
//! wrote a boolean or a number and the spec holds a string, the field is
//! refused by its path (as Kubernetes' schema checks do).

use serde::Serialize;
use serde_norway::Value;

use super::error::{invalid, SpecError};

/// Checks `typed` (the spec as read) against `written` (the document).
pub fn check(written: &Value, typed: &impl Serialize) -> Result<(), SpecError> {
    let typed = serde_norway::to_value(typed).map_err(|e| SpecError::Yaml(e.to_string()))?;
    walk(written, &typed, "")
}

fn walk(written: &Value, typed: &Value, path: &str) -> Result<(), SpecError> {
    match (written, typed) {
        (Value::Mapping(w), Value::Mapping(t)) => {
            for (k, wv) in w {
                let (Some(key), Some(tv)) = (k.as_str(), t.get(k)) else {
                    continue;
                };
                let at = if path.is_empty() {
                    key.to_owned()
                } else {
                    format!("{path}.{key}")
                };
                walk(wv, tv, &at)?;
            }
            Ok(())
        }
        (Value::Sequence(w), Value::Sequence(t)) => {
            for (i, (wv, tv)) in w.iter().zip(t).enumerate() {
                walk(wv, tv, &format!("{path}[{i}]"))?;
            }
            Ok(())
        }
        // Only where the text is the scalar taken as it stands: a value the
        // spec interprets (a duration written `0`, read as `0s`) is fine.
        (Value::Bool(b), Value::String(t)) if *t == b.to_string() => Err(invalid(
            path,
            format!("must be text, not the boolean {b} (quote it, \"{b}\", if you mean the text)"),
        )),
        (Value::Number(n), Value::String(t)) if *t == n.to_string() => Err(invalid(
            path,
            format!("must be text, not the number {n} (quote it, \"{n}\", if you mean the text)"),
        )),
        (Value::Tagged(w), _) => walk(&w.value, typed, path),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use crate::spec::RolloutSpec;

    fn refused(yaml: &str) -> String {
        RolloutSpec::from_yaml(yaml).unwrap_err().to_string()
    }

    const FLAG: &str = "kind: flag\nkey: new-cart\nowner: shop\nlifecycle: permanent\nidentity: [{header: x-user-id}]\n\
                        steps: [{percent: 10}]\n";

    #[test]
    fn a_boolean_or_number_where_text_is_wanted_is_refused_naming_the_field() {
        let e = refused(&format!("{FLAG}default_variant: false\nvariant: on\n"));
        assert!(
            e.contains("default_variant: must be text, not the boolean false"),
            "{e}"
        );
        let e = refused(&format!("{FLAG}default_variant: \"off\"\nvariant: true\n"));
        assert!(
            e.contains("variant: must be text, not the boolean true"),
            "{e}"
        );
        let e = refused(
            "name: checkout\nstable: 1\ncanary: v2\nidentity: [{header: x-user-id}]\nsteps: [{percent: 10}]\n",
        );
        assert!(e.contains("stable: must be text, not the number 1"), "{e}");
        let e = refused(
            "name: checkout\nstable: v1\ncanary: v2\nidentity: [{header: 12}]\nsteps: [{percent: 10}]\n",
        );
        assert!(
            e.contains("identity[0].header: must be text, not the number 12"),
            "{e}"
        );
        // Quoted, it is the text it says.
        let ok = RolloutSpec::from_yaml(&format!(
            "{FLAG}default_variant: \"false\"\nvariant: \"true\"\n"
        ));
        assert!(ok.is_ok(), "{ok:?}");
        // A duration written as a number is read as one, as before.
        let ok = RolloutSpec::from_yaml(
            "name: checkout\nstable: v1\ncanary: v2\nidentity: [{header: x-user-id}]\n\
             steps: [{percent: 10, pause: 0}]\n",
        );
        assert!(ok.is_ok(), "{ok:?}");
        // Numbers and booleans where the spec wants them stay as they were.
        let ok = RolloutSpec::from_yaml(
            "name: checkout\nstable: v1\ncanary: v2\nidentity: [{header: x-user-id}]\n\
             steps: [{percent: 10, approval: true}]\nanalysis: {min_requests: 50}\n",
        );
        assert!(ok.is_ok(), "{ok:?}");
    }
}
