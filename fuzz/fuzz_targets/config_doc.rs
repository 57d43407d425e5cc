//! The document `GET /v1/config` serves: any bytes either parse into a valid
//! document that survives a round trip and compiles with every bucket
//! owned, or are refused; never a panic.
#![no_main]

use dimmer_core::{parse_config_doc, Compiled};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(doc) = parse_config_doc(data) else {
        return;
    };
    let text = serde_json::to_vec(&doc).expect("a parsed document serialises");
    let again = parse_config_doc(&text).expect("a serialised document parses again");
    assert_eq!(again, doc, "round trip changed the document");
    let compiled = Compiled::new(doc.revision, "x-dimmer-version", &doc.rollouts);
    for r in &compiled.rollouts {
        assert_eq!(r.ends.last().copied(), Some(10_000));
        assert!(
            r.ends.windows(2).all(|w| w[0] <= w[1]),
            "bucket ranges in order"
        );
        for b in [0u16, 1, 4999, 9999] {
            assert!(r.version_of_bucket(b) < r.versions.len());
        }
    }
});
