//! Property tests for Cache-Control parsing, storability and key normalisation: any input
//! is answered without a panic, and the answers keep the cache safe.

use proptest::prelude::*;
use shoal_cache_core::freshness::{CacheControl, storable};
use shoal_cache_core::invalidation::Purge;
use shoal_cache_core::wire::InvalidationTarget;
use shoal_cache_core::{CacheKey, KeyPolicy, normalise_path};

/// Every byte but `/` and alphanumerics percent-encoded.
fn encode_all(p: &str) -> String {
    const SET: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC.remove(b'/');
    percent_encoding::utf8_percent_encode(p, SET).to_string()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2_000))]

    /// Whatever else a Cache-Control says (stray quotes, junk, other directives), a
    /// `no-store` or `private` directive in it means the response is not stored. (`=` is
    /// left out of the noise: after it, a quoted string is an argument, not directives.)
    #[test]
    fn no_store_and_private_always_win(
        before in "[ -<>-~]{0,40}",
        after in "[ -<>-~]{0,40}",
        which in prop::sample::select(vec!["no-store", "private", "NO-STORE", "Private"]),
        status in 100u16..600,
        auth in any::<bool>(),
    ) {
        let cc = format!("{before}, {which}, {after}");
        let headers = vec![("cache-control".to_string(), cc.clone())];
        prop_assert!(storable(status, &headers, auth, None).is_err(), "{cc}");
        let _ = CacheControl::from_headers(&headers); // parses anything
    }

    /// An unterminated quoted argument cannot hide what follows it.
    #[test]
    fn an_unterminated_quote_hides_nothing(arg in "[ -!#-~]{0,20}", which in prop::sample::select(vec!["no-store", "private"])) {
        let cc = format!("ext=\"{arg}, {which}");
        let headers = vec![("cache-control".to_string(), cc.clone())];
        prop_assert!(storable(200, &headers, false, None).is_err(), "{cc}");
    }

    /// An authorised request's response is stored only when it says it may be shared.
    #[test]
    fn authorised_responses_need_explicit_sharing(cc in "[ -~]{0,60}") {
        let headers = vec![("cache-control".to_string(), cc.clone())];
        if storable(200, &headers, true, None).is_ok() {
            let parsed = CacheControl::from_headers(&headers);
            prop_assert!(
                parsed.public || parsed.s_maxage.is_some() || parsed.must_revalidate,
                "{cc}"
            );
        }
    }

    /// A normalised path never names anything above the root or in two ways.
    #[test]
    fn normalised_paths_are_safe(raw in "/[ -~]{0,60}") {
        if let Ok(p) = normalise_path(&raw) {
            prop_assert!(p.starts_with('/'), "{raw:?} -> {p:?}");
            prop_assert!(!p.split('/').any(|s| s == ".." || s == "."), "{raw:?} -> {p:?}");
            prop_assert!(!p.contains('\\') && !p.contains('\0') && !p.contains("//"), "{raw:?} -> {p:?}");
            // Decoding once more changes nothing that could escape.
            if let Ok(again) = normalise_path(&p) {
                prop_assert!(!again.split('/').any(|s| s == ".."), "{p:?} -> {again:?}");
            }
        }
    }

    /// Admin and edge paths are decoded exactly once: what is accepted, encoded again,
    /// decodes back to it (`%2541` stays `%41`), and encoded separators are refused.
    #[test]
    fn paths_are_decoded_once(raw in "/([a-z%/.\\\\]|%2[05fF]|%5[cC]|%41){0,30}") {
        if let Ok(p) = normalise_path(&raw) {
            let back = normalise_path(&encode_all(&p));
            prop_assert_eq!(back.as_deref(), Ok(p.as_str()), "{:?}", raw);
            let lower = raw.to_ascii_lowercase();
            prop_assert!(!lower.contains("%2f") && !lower.contains("%5c"), "{:?} accepted", raw);
        }
    }

    /// A purge body names exactly one target, with normalised paths, or is refused.
    #[test]
    fn purge_bodies_name_one_checked_target(
        keys in prop::collection::vec("/[a-z%./]{0,12}", 0..3),
        prefix in prop::option::of("/[a-z%./]{0,12}"),
        tag in prop::option::of("[ -~]{0,8}"),
    ) {
        let body = serde_json::json!({"keys": keys, "prefix": prefix, "tag": tag});
        let purge = Purge::from_json(body.to_string().as_bytes()).expect("well-formed JSON");
        let named = usize::from(!keys.is_empty()) + usize::from(prefix.is_some()) + usize::from(tag.is_some());
        match purge.target() {
            Ok(InvalidationTarget::Keys(k)) => {
                prop_assert_eq!(named, 1);
                for (raw, k) in keys.iter().zip(&k) {
                    let once = normalise_path(raw);
                    prop_assert_eq!(once.as_ref(), Ok(k));
                }
            }
            Ok(InvalidationTarget::Prefix(p)) => {
                prop_assert_eq!(named, 1);
                prop_assert!(!p.split('/').any(|s| s == ".."), "{:?}", p);
            }
            Ok(InvalidationTarget::Tag(t)) => {
                prop_assert_eq!(named, 1);
                prop_assert!(!t.is_empty() && t.bytes().all(|b| b.is_ascii_graphic()), "{:?}", t);
            }
            Err(_) => {}
        }
        if named != 1 {
            prop_assert!(purge.target().is_err());
        }
    }

    /// Keys ignore parameter order and ignored parameters, and nothing else.
    #[test]
    fn keys_ignore_order_and_ignored_params_only(
        params in prop::collection::vec(("[a-z]{1,4}", "[a-z0-9]{0,4}"), 0..6),
        tracking in "[a-z0-9]{0,6}",
    ) {
        let policy = KeyPolicy { ignored_params: vec!["utm_*".into()] };
        let q: Vec<String> = params.iter().map(|(k, v)| format!("{k}={v}")).collect();
        let mut rev = q.clone();
        rev.reverse();
        let a = CacheKey::new("h.test", &format!("/p?{}", q.join("&")), &policy);
        let b = CacheKey::new("h.test", &format!("/p?utm_x={tracking}&{}", rev.join("&")), &policy);
        prop_assert_eq!(a.clone().ok(), b.ok());
        if let (Some((k, _)), Ok(a)) = (params.first(), a) {
            let c = CacheKey::new("h.test", &format!("/p?{}&{k}=changed", q.join("&")), &policy);
            prop_assert_ne!(Some(a), c.ok());
        }
    }
}
