//! Wire codec properties: every message round-trips; arbitrary bytes never panic the
//! decoder, never claim more than they hold, and a stream of frames splits back exactly.

use bytes::{Bytes, BytesMut};
use proptest::prelude::*;
use shoal_cache_core::WireError;
use shoal_cache_core::wire::*;

fn s() -> impl Strategy<Value = String> {
    ".{0,40}"
}

fn headers() -> impl Strategy<Value = Vec<(String, String)>> {
    prop::collection::vec((s(), s()), 0..6)
}

fn message() -> impl Strategy<Value = Message> {
    prop_oneof![
        (
            any::<u64>(),
            s(),
            prop::option::of(s()),
            s(),
            headers(),
            any::<u64>()
        )
            .prop_map(
                |(request_id, key, if_none_match, method, headers, body_length)| {
                    Message::Fetch(FetchRequest {
                        request_id,
                        key,
                        if_none_match,
                        method,
                        headers,
                        body_length,
                    })
                }
            ),
        (
            any::<u64>(),
            any::<u16>(),
            headers(),
            prop::option::of(any::<u64>()),
            any::<u64>()
        )
            .prop_map(|(request_id, status, headers, len, version)| {
                Message::ResponseHead(ResponseHead {
                    request_id,
                    status,
                    headers,
                    length: len.map_or(BodyLength::Streamed, BodyLength::Known),
                    version,
                })
            }),
        (
            any::<u64>(),
            any::<u64>(),
            prop::collection::vec(any::<u8>(), 0..2048),
            any::<bool>()
        )
            .prop_map(|(request_id, offset, data, last)| {
                Message::BodyChunk(BodyChunk {
                    request_id,
                    offset,
                    data: Bytes::from(data),
                    last,
                })
            }),
        (any::<u64>(), s(), headers()).prop_map(|(request_id, etag, headers)| {
            Message::NotModified(NotModified {
                request_id,
                etag,
                headers,
            })
        }),
        (
            any::<u64>(),
            any::<bool>(),
            prop_oneof![
                prop::collection::vec(s(), 0..5).prop_map(InvalidationTarget::Keys),
                s().prop_map(InvalidationTarget::Prefix),
                s().prop_map(InvalidationTarget::Tag),
            ]
        )
            .prop_map(|(seq, soft, target)| Message::Invalidate(Invalidation {
                seq,
                target,
                soft
            })),
        (s(), any::<u64>()).prop_map(|(edge_id, seq)| Message::Ack(Ack { edge_id, seq })),
        (s(), s(), prop::option::of(s())).prop_map(|(edge_id, region, token)| {
            Message::Hello(Hello {
                edge_id,
                region,
                token,
            })
        }),
        (s(), s(), prop::option::of((any::<u64>(), any::<u64>()))).prop_map(
            |(edge_id, region, resume)| {
                Message::Subscribe(Subscribe {
                    edge_id,
                    region,
                    resume: resume.map(|(epoch, seq)| Resume { epoch, seq }),
                })
            }
        ),
        (any::<u64>(), any::<u64>(), any::<bool>(), any::<u64>(), s()).prop_map(
            |(epoch, seq, reset, heartbeat_ms, prefix)| Message::Subscribed(Subscribed {
                epoch,
                seq,
                reset,
                heartbeat_ms,
                modes: shoal_cache_core::consistency::Modes {
                    rules: vec![shoal_cache_core::consistency::ModeRule {
                        prefix,
                        mode: shoal_cache_core::consistency::Mode::Direct,
                    }],
                    default: shoal_cache_core::consistency::Mode::Ttl,
                },
            })
        ),
        (
            any::<u64>(),
            s(),
            any::<bool>(),
            prop::option::of(s()),
            any::<u64>(),
            prop::option::of(any::<u64>())
        )
            .prop_map(|(request_id, key, put, content_type, length, version)| {
                Message::Write(WriteRequest {
                    request_id,
                    key,
                    method: if put {
                        WriteMethod::Put
                    } else {
                        WriteMethod::Delete
                    },
                    content_type,
                    tags: vec![],
                    length,
                    version,
                })
            }),
        (
            any::<u64>(),
            any::<u16>(),
            any::<u64>(),
            prop::option::of(s()),
            prop::option::of(any::<u64>()),
            s()
        )
            .prop_map(
                |(request_id, status, version, etag, seq, message)| Message::Written(Written {
                    request_id,
                    status,
                    version,
                    etag,
                    seq,
                    headers: vec![],
                    message,
                })
            ),
        (s(), any::<u64>(), any::<u64>()).prop_map(|(edge_id, seq, duration_ms)| Message::Lease(
            Lease {
                edge_id,
                seq,
                duration_ms
            }
        )),
        any::<u64>().prop_map(|seq| Message::Heartbeat(Heartbeat { seq })),
        (prop::option::of(any::<u64>()), 0usize..6, s()).prop_map(|(request_id, c, message)| {
            let code = [
                ErrorCode::NotFound,
                ErrorCode::BadRequest,
                ErrorCode::Unavailable,
                ErrorCode::Internal,
                ErrorCode::Version,
                ErrorCode::Unauthorized,
            ][c];
            Message::Error(ErrorMessage {
                request_id,
                code,
                message,
            })
        }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn every_message_round_trips(m in message()) {
        let c = FrameCodec::default();
        let f = c.encode(&m).unwrap();
        prop_assert_eq!(c.decode(&f).unwrap(), (m, f.len()));
    }

    #[test]
    fn a_stream_of_frames_splits_back(ms in prop::collection::vec(message(), 1..8)) {
        let c = FrameCodec::default();
        let mut buf = BytesMut::new();
        for m in &ms {
            c.encode_into(m, &mut buf).unwrap();
        }
        let mut at = 0;
        let mut out = Vec::new();
        while at < buf.len() {
            let (m, used) = c.decode(&buf[at..]).unwrap();
            out.push(m);
            at += used;
        }
        prop_assert_eq!(out, ms);
    }

    /// Raw garbage: no panic; an `Ok` never claims more bytes than it was given.
    #[test]
    fn garbage_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        let c = FrameCodec::new(4096);
        if let Ok((_, used)) = c.decode(&bytes) {
            prop_assert!(used <= bytes.len());
        }
    }

    /// A valid header in front of garbage: the body decoder must reject or accept, never
    /// panic, and never read past the announced length.
    #[test]
    fn valid_header_garbage_body(body in prop::collection::vec(any::<u8>(), 0..512), extra in 0usize..16) {
        let c = FrameCodec::new(4096);
        let mut f = vec![MAGIC[0], MAGIC[1], PROTOCOL_VERSION, 0];
        f.extend_from_slice(&(body.len() as u32).to_be_bytes());
        f.extend_from_slice(&body);
        f.extend(std::iter::repeat_n(0xAA, extra));
        match c.decode(&f) {
            Ok((_, used)) => prop_assert_eq!(used, HEADER_LEN + body.len()),
            Err(WireError::Incomplete { .. }) => prop_assert!(false, "whole frame reported incomplete"),
            Err(_) => {}
        }
    }

    /// Flipping any one byte of a valid frame is either detected or decodes to some
    /// message; it never panics.
    #[test]
    fn bit_flips_never_panic(m in message(), pos in any::<prop::sample::Index>(), bit in 0u8..8) {
        let c = FrameCodec::default();
        let mut f = c.encode(&m).unwrap().to_vec();
        let i = pos.index(f.len());
        f[i] ^= 1 << bit;
        let _ = c.decode(&f);
    }
}

#[test]
fn announced_length_beyond_the_limit_is_refused_before_reading() {
    let c = FrameCodec::new(64 * 1024);
    let mut h = vec![MAGIC[0], MAGIC[1], PROTOCOL_VERSION, 0];
    h.extend_from_slice(&u32::MAX.to_be_bytes());
    assert!(matches!(c.decode(&h), Err(WireError::FrameTooLarge { .. })));
    assert!(matches!(
        c.check_header(&h),
        Err(WireError::FrameTooLarge { .. })
    ));
}
