//! The document `GET /v1/config` serves: any bytes either parse into a valid
//! document that survives a round trip and compiles with every bucket
//! owned, and whose flags evaluate to a variant in range, twice alike; or
//! are refused; never a panic.
#![no_main]

use dimmer_core::flags::HeaderContext;
use dimmer_core::{parse_config_doc, Compiled, Request};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(doc) = parse_config_doc(data) else {
        return;
    };
    let text = serde_json::to_vec(&doc).expect("a parsed document serialises");
    let again = parse_config_doc(&text).expect("a serialised document parses again");
    assert_eq!(again, doc, "round trip changed the document");
    let compiled = Compiled::new(doc.revision, "x-dimmer-version", &doc.rollouts)
        .with_flags("x-dimmer-flags", &doc.flags);
    // Every header the flags could read answers with the input's bytes.
    struct Echo<'a>(&'a [u8]);
    impl Request for Echo<'_> {
        fn header(&self, _name: &str) -> Option<Vec<u8>> {
            Some(self.0.to_vec())
        }
    }
    let req = Echo(data.get(..16).unwrap_or(data));
    let flags = &compiled.flags;
    let ctx = HeaderContext::new(flags, &req);
    let once = flags.evaluate(&ctx, &mut || 42);
    assert_eq!(once, flags.evaluate(&ctx, &mut || 42), "evaluation is a function");
    for (f, e) in flags.flags.iter().zip(&once) {
        if let Some(e) = e {
            assert!(e.variant < f.variants.len());
        }
    }
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
