//! Frame encode/decode of a fetch request and of a full 64 KiB body chunk.

use std::hint::black_box;

use bytes::Bytes;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use shoal_cache_core::wire::{BodyChunk, FetchRequest, FrameCodec, MAX_CHUNK, Message};

fn bench(c: &mut Criterion) {
    let codec = FrameCodec::default();
    let fetch = Message::Fetch(FetchRequest {
        request_id: 42,
        key: "video.example.com/hls/1080p/segment_00042.ts".into(),
        if_none_match: Some("\"v17\"".into()),
        method: "GET".into(),
        headers: vec![("accept-encoding".into(), "gzip".into())],
        body_length: 0,
    });
    let chunk = Message::BodyChunk(BodyChunk {
        request_id: 42,
        offset: 1 << 20,
        data: Bytes::from(vec![0x5a; MAX_CHUNK]),
        last: false,
    });
    for (name, msg) in [("fetch", &fetch), ("chunk64k", &chunk)] {
        let frame = codec.encode(msg).expect("encodes");
        let mut g = c.benchmark_group(format!("wire/{name}"));
        g.throughput(Throughput::Bytes(frame.len() as u64));
        g.bench_function("encode", |b| {
            b.iter(|| black_box(codec.encode(black_box(msg))))
        });
        g.bench_function("decode", |b| {
            b.iter(|| black_box(codec.decode(black_box(&frame))))
        });
        g.finish();
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
