//! Arbitrary CMCD from a client (query value, header, the request path it came with):
//! never a panic; what Shoal writes back reads back the same; and a resolved `nor` is
//! always an absolute path on this host with no dot segment left, so a prefetch can only
//! ever name an object of the same site.
#![no_main]

use libfuzzer_sys::fuzz_target;
use shoal_cache_core::cmcd::{Cmcd, resolve_next};

fuzz_target!(|input: (&str, &str, &str)| {
    let (query, header, path) = input;
    let parsed = Cmcd::from_request(Some(query), |_| None)
        .ok()
        .flatten()
        .into_iter()
        .chain(Cmcd::from_request(None, |n| (n == "cmcd-request").then_some(header)).ok().flatten());
    for c in parsed {
        let written = c.to_value();
        let again = Cmcd::parse(&written).expect("Shoal's own CMCD parses");
        assert_eq!(again.to_value(), written, "round trip of {written:?}");
        if let Some(next) = &c.next
            && let Some(p) = resolve_next(path, next)
        {
            assert!(p.starts_with('/') && !p.starts_with("//"), "{p:?}");
            let path_part = p.split('?').next().unwrap_or_default();
            assert!(
                !path_part.split('/').any(|s| s == ".." || s == "."),
                "{p:?} from {next:?}"
            );
        }
    }
});
