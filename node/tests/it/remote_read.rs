//! Remote read, both answer types, decoded by hand: sampled (snappy
//! ReadResponse) and streamed (CRC-checked ChunkedReadResponse frames whose
//! XOR chunks must decode to the same samples).

use pharos_proto::prometheus as pb;
use pharos_storage::chunk::{collect_samples, Chunk, Encoding};
use prost::Message;

use crate::common::*;

fn read_req(types: Vec<i32>) -> Vec<u8> {
    let req = pb::ReadRequest {
        queries: vec![pb::Query {
            start_timestamp_ms: 0,
            end_timestamp_ms: 1_000_000,
            matchers: vec![pb::LabelMatcher {
                r#type: pb::label_matcher::Type::Re as i32,
                name: "__name__".into(),
                value: "rr_.*".into(),
            }],
            hints: None,
        }],
        accepted_response_types: types,
    };
    snappy(&req.encode_to_vec())
}

fn uvarint(b: &[u8]) -> (u64, usize) {
    let mut v = 0u64;
    for (i, &x) in b.iter().enumerate() {
        v |= u64::from(x & 0x7f) << (7 * i);
        if x < 0x80 {
            return (v, i + 1);
        }
    }
    panic!("bad varint");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sampled_and_streamed_agree() {
    let n = node().await;
    let mut ts = Vec::new();
    for i in 0..50 {
        // 300 samples: three chunks per series.
        let samples: Vec<(i64, f64)> = (0..300).map(|k| (k * 1000, (i * k) as f64 * 0.5)).collect();
        ts.push(series(
            &[("__name__", "rr_metric"), ("i", &format!("{i:02}"))],
            &samples,
        ));
    }
    assert_eq!(write_v1(n.addr, &write_req(ts)).await.status, 204);

    let r = request(
        n.addr,
        "POST",
        "/api/v1/read",
        &[
            ("Content-Type", "application/x-protobuf"),
            ("Content-Encoding", "snappy"),
        ],
        &read_req(vec![]),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("content-encoding"), Some("snappy"));
    let raw = snap::raw::Decoder::new().decompress_vec(&r.body).unwrap();
    let sampled = pb::ReadResponse::decode(raw.as_slice()).unwrap();
    assert_eq!(sampled.results.len(), 1);
    let series = &sampled.results[0].timeseries;
    assert_eq!(series.len(), 50);
    assert!(series.iter().all(|s| s.samples.len() == 300));
    assert_eq!(series[3].samples[10].value, 15.0);

    let r = request(
        n.addr,
        "POST",
        "/api/v1/read",
        &[
            ("Content-Type", "application/x-protobuf"),
            ("Content-Encoding", "snappy"),
        ],
        &read_req(vec![
            pb::read_request::ResponseType::StreamedXorChunks as i32,
            pb::read_request::ResponseType::Samples as i32,
        ]),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(r
        .header("content-type")
        .unwrap()
        .starts_with("application/x-streamed-protobuf"));
    let mut rest = &r.body[..];
    let mut streamed: Vec<(Vec<pb::Label>, Vec<(i64, f64)>)> = Vec::new();
    while !rest.is_empty() {
        let (len, n) = uvarint(rest);
        let crc = u32::from_be_bytes(rest[n..n + 4].try_into().unwrap());
        let msg = &rest[n + 4..n + 4 + len as usize];
        assert_eq!(crc32c::crc32c(msg), crc);
        let frame = pb::ChunkedReadResponse::decode(msg).unwrap();
        assert_eq!(frame.query_index, 0);
        for cs in frame.chunked_series {
            let mut samples = Vec::new();
            for c in &cs.chunks {
                assert_eq!(c.r#type, pb::chunk::Encoding::Xor as i32);
                let chunk = Chunk::new(Encoding::Xor, c.data.to_vec().into()).unwrap();
                samples.extend(collect_samples(&mut chunk.iter()).unwrap());
            }
            streamed.push((cs.labels, samples));
        }
        rest = &rest[n + 4 + len as usize..];
    }
    assert_eq!(streamed.len(), 50);
    for (s, (labels, samples)) in series.iter().zip(&streamed) {
        assert_eq!(&s.labels, labels);
        let want: Vec<(i64, f64)> = s.samples.iter().map(|x| (x.timestamp, x.value)).collect();
        assert_eq!(&want, samples);
    }

    // Garbage is a 400.
    let r = request(n.addr, "POST", "/api/v1/read", &[], b"\x03abc").await;
    assert_eq!(r.status, 400);
    n.stop().await;
}
