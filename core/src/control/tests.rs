//! Control-plane tests: message round trips, the length-prefixed codec and
//! what it refuses.

use super::codec::{Decoder, LENGTH_PREFIX_LEN, decode_body, encode};
use super::*;

fn hello() -> Hello {
    Hello {
        protocol_version: PROTOCOL_VERSION,
        role: PeerRole::Client,
        room: "ROOM1".into(),
        mac: "02:00:00:00:00:51".parse().unwrap(),
        datagram_budget: 1414,
        credential: Some(Credential("hunter2".into())),
        header_compression: true,
    }
}

fn all_messages() -> Vec<ControlMessage> {
    vec![
        ControlMessage::Hello(hello()),
        ControlMessage::Welcome(Welcome {
            peer_id: PeerId(7),
            room_id: 3,
            mtu: 1394,
            header_compression: true,
        }),
        ControlMessage::Reject(Reject {
            code: RejectCode::DuplicateMac,
            message: "MAC in use".into(),
        }),
        ControlMessage::PeerJoined {
            peer_id: PeerId(8),
            role: PeerRole::Gateway,
            mac: "00:1b:21:00:00:01".parse().unwrap(),
        },
        ControlMessage::PeerLeft {
            peer_id: PeerId(8),
            reason: "timeout".into(),
        },
        ControlMessage::StatsRequest,
        ControlMessage::Stats(PeerStats {
            frames_rx: 1,
            rtt_us: Some(80),
            ..PeerStats::default()
        }),
        ControlMessage::Disconnect {
            reason: DisconnectReason::Shutdown,
            message: "relay restarting".into(),
        },
    ]
}

#[tokio::test]
async fn every_message_round_trips_through_a_stream() {
    let messages = all_messages();
    let mut wire = Vec::new();
    for m in &messages {
        write_message(&mut wire, m).await.unwrap();
    }
    let mut reader = wire.as_slice();
    for m in &messages {
        let got = read_message(&mut reader, MAX_CONTROL_FRAME).await.unwrap();
        assert_eq!(got.as_ref(), Some(m));
    }
    assert!(
        read_message(&mut reader, MAX_CONTROL_FRAME)
            .await
            .unwrap()
            .is_none()
    );
}

#[test]
fn wire_shape_is_a_tagged_object() {
    let json = serde_json::to_value(ControlMessage::Hello(hello())).unwrap();
    assert_eq!(json["type"], "hello");
    assert_eq!(json["mac"], "02:00:00:00:00:51");
    assert_eq!(json["role"], "client");
    let json = serde_json::to_value(ControlMessage::StatsRequest).unwrap();
    assert_eq!(json, serde_json::json!({"type": "stats_request"}));
}

#[test]
fn credential_never_in_debug_output() {
    let text = format!("{:?}", ControlMessage::Hello(hello()));
    assert!(!text.contains("hunter2"), "{text}");
    assert!(text.contains("redacted"));
}

#[tokio::test]
async fn oversize_prefix_is_refused_before_reading() {
    let mut wire = Vec::new();
    wire.extend_from_slice(&u32::MAX.to_be_bytes());
    let err = read_message(&mut wire.as_slice(), MAX_CONTROL_FRAME)
        .await
        .unwrap_err();
    assert!(matches!(err, CodecError::Oversize { len, .. } if len == u32::MAX as usize));
    assert_eq!(err.reason(), "control-oversize");
}

#[tokio::test]
async fn truncated_frames() {
    let frame = encode(&ControlMessage::StatsRequest);
    for cut in 1..frame.len() {
        let err = read_message(&mut &frame[..cut], MAX_CONTROL_FRAME)
            .await
            .unwrap_err();
        assert!(
            matches!(err, CodecError::Truncated { .. }),
            "cut {cut}: {err}"
        );
    }
    let err = read_message(&mut &[0u8, 0, 0, 0][..], MAX_CONTROL_FRAME)
        .await
        .unwrap_err();
    assert!(matches!(err, CodecError::Empty));
}

#[test]
fn garbage_bodies() {
    assert!(matches!(
        decode_body(&[0xff, 0xfe, b'{']),
        Err(CodecError::InvalidUtf8(_))
    ));
    for body in [
        &b"{"[..],
        b"null",
        b"[]",
        b"{\"type\":\"launch_missiles\"}",
        b"{\"type\":\"welcome\",\"peer_id\":1,\"room_id\":1}",
        b"{\"type\":\"welcome\",\"peer_id\":1,\"room_id\":1,\"mtu\":1394,\"extra\":1}",
        b"{\"type\":\"welcome\",\"peer_id\":-1,\"room_id\":1,\"mtu\":1394}",
        b"{\"type\":\"hello\",\"protocol_version\":1,\"role\":\"admin\",\"room\":\"R\",\"mac\":\"02:00:00:00:00:01\",\"datagram_budget\":1400}",
        b"{\"type\":\"hello\",\"protocol_version\":1,\"role\":\"client\",\"room\":\"R\",\"mac\":\"zz\",\"datagram_budget\":1400}",
    ] {
        let err = decode_body(body).unwrap_err();
        assert!(matches!(err, CodecError::InvalidJson(_)), "{:?}: {err}", String::from_utf8_lossy(body));
    }
}

fn field_error(message: ControlMessage) -> &'static str {
    match message.validate() {
        Err(e) => e.field,
        Ok(()) => panic!("{message:?} validated"),
    }
}

#[test]
fn validation_names_the_field() {
    for m in all_messages() {
        m.validate().unwrap();
    }
    let mut h = hello();
    h.room = "no spaces".into();
    assert_eq!(field_error(ControlMessage::Hello(h.clone())), "room");
    h.room = "x".repeat(33);
    assert_eq!(field_error(ControlMessage::Hello(h.clone())), "room");
    h.room = String::new();
    assert_eq!(field_error(ControlMessage::Hello(h.clone())), "room");
    h = hello();
    h.mac = "01:00:5e:00:00:01".parse().unwrap();
    assert_eq!(field_error(ControlMessage::Hello(h.clone())), "mac");
    h.mac = crate::wire::MacAddr::ZERO;
    assert_eq!(field_error(ControlMessage::Hello(h.clone())), "mac");
    h = hello();
    h.datagram_budget = 0;
    assert_eq!(
        field_error(ControlMessage::Hello(h.clone())),
        "datagram_budget"
    );
    h = hello();
    h.credential = Some(Credential(String::new()));
    assert_eq!(field_error(ControlMessage::Hello(h)), "credential");
    let welcome = |peer_id, mtu| {
        ControlMessage::Welcome(Welcome {
            peer_id: PeerId(peer_id),
            room_id: 1,
            mtu,
            header_compression: false,
        })
    };
    assert_eq!(field_error(welcome(0, 1394)), "peer_id");
    assert_eq!(field_error(welcome(1, 100)), "mtu");
    assert_eq!(field_error(welcome(1, 9001)), "mtu");
    assert_eq!(
        field_error(ControlMessage::PeerLeft {
            peer_id: PeerId(0),
            reason: String::new()
        }),
        "peer_id"
    );
    assert_eq!(
        field_error(ControlMessage::Disconnect {
            reason: DisconnectReason::Kicked,
            message: "x".repeat(513)
        }),
        "message"
    );
}

#[tokio::test]
async fn invalid_field_surfaces_from_the_stream() {
    let mut h = hello();
    h.room = "bad room".into();
    let frame = encode(&ControlMessage::Hello(h));
    let err = read_message(&mut frame.as_slice(), MAX_CONTROL_FRAME)
        .await
        .unwrap_err();
    assert!(
        matches!(err, CodecError::Invalid(ref v) if v.field == "room"),
        "{err}"
    );
    assert!(err.to_string().contains("room"));
}

#[test]
fn reject_codes_know_if_they_are_final() {
    assert!(RejectCode::DuplicateMac.is_final());
    assert!(RejectCode::GatewayPresent.is_final());
    assert!(RejectCode::Unauthorized.is_final());
    assert!(RejectCode::BadRoomCode.is_final());
    assert!(!RejectCode::RelayFull.is_final());
    assert!(!RejectCode::ShuttingDown.is_final());
    let json = serde_json::to_string(&RejectCode::GatewayPresent).unwrap();
    assert_eq!(json, format!("\"{}\"", RejectCode::GatewayPresent.as_str()));
}

#[test]
fn prefix_is_big_endian_length() {
    let frame = encode(&ControlMessage::StatsRequest);
    let len = u32::from_be_bytes(frame[..LENGTH_PREFIX_LEN].try_into().unwrap()) as usize;
    assert_eq!(len, frame.len() - LENGTH_PREFIX_LEN);
}

#[tokio::test]
async fn random_bytes_never_panic_the_codec() {
    let mut state: u64 = 0x1234_5678_9abc_def1;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let valid = encode(&ControlMessage::Hello(hello()));
    for round in 0..20_000 {
        let bytes: Vec<u8> = if round % 2 == 0 {
            (0..(next() % 64) as usize).map(|_| next() as u8).collect()
        } else {
            let mut b = valid.clone();
            let at = (next() as usize) % b.len();
            b[at] ^= 1 << (next() % 8);
            b.truncate((next() as usize) % (b.len() + 1));
            b
        };
        // Every outcome is a value or an error; none is a panic.
        let _ = read_message(&mut bytes.as_slice(), MAX_CONTROL_FRAME).await;
        let _ = crate::wire::overlay::decode(&bytes);
        if let Ok(view) = crate::wire::FrameView::parse(&bytes) {
            let _ = (
                view.l3(),
                view.is_dhcpv4_server(),
                view.is_ipv6_router_advertisement(),
            );
        }
    }
}

#[test]
fn the_decoder_takes_a_stream_in_any_chunks() {
    let messages = all_messages();
    let wire: Vec<u8> = messages.iter().flat_map(encode).collect();
    for chunk in [1, 2, 3, 7, 64, wire.len()] {
        let mut decoder = Decoder::new(MAX_CONTROL_FRAME);
        let mut got = Vec::new();
        for piece in wire.chunks(chunk) {
            let mut at = 0;
            while at < piece.len() {
                let (took, body) = decoder.push(&piece[at..]);
                at += took;
                if let Some(body) = body.unwrap() {
                    got.push(decode_body(&body).unwrap());
                }
            }
        }
        assert!(decoder.is_between_frames());
        decoder.finish().unwrap();
        assert_eq!(got, messages, "chunks of {chunk}");
    }
}

#[test]
fn the_decoder_never_takes_past_a_frame() {
    let one = encode(&ControlMessage::StatsRequest);
    let mut wire = one.clone();
    wire.extend_from_slice(b"after");
    let mut decoder = Decoder::new(MAX_CONTROL_FRAME);
    assert_eq!(decoder.needed(), LENGTH_PREFIX_LEN);
    let (took, body) = decoder.push(&wire[..2]);
    assert_eq!(took, 2);
    assert!(body.unwrap().is_none());
    assert_eq!(decoder.needed(), LENGTH_PREFIX_LEN - 2);
    let (took, body) = decoder.push(&wire[2..]);
    assert_eq!(took, one.len() - 2);
    assert_eq!(
        decode_body(&body.unwrap().unwrap()).unwrap(),
        ControlMessage::StatsRequest
    );
    assert_eq!(decoder.needed(), LENGTH_PREFIX_LEN);
}

#[test]
fn the_decoder_refuses_an_oversize_prefix_and_names_a_cut_frame() {
    let mut decoder = Decoder::new(100);
    let (took, body) = decoder.push(&101u32.to_be_bytes());
    assert_eq!(took, LENGTH_PREFIX_LEN);
    assert!(matches!(
        body,
        Err(CodecError::Oversize { len: 101, max: 100 })
    ));
    let mut decoder = Decoder::new(100);
    let frame = encode(&ControlMessage::StatsRequest);
    let _ = decoder.push(&frame[..2]);
    assert!(matches!(
        decoder.finish(),
        Err(CodecError::Truncated {
            got: 2,
            expected: LENGTH_PREFIX_LEN
        })
    ));
    let mut decoder = Decoder::new(100);
    let _ = decoder.push(&frame[..frame.len() - 1]);
    assert!(!decoder.is_between_frames());
    assert!(matches!(
        decoder.finish(),
        Err(CodecError::Truncated { got, expected }) if got + 1 == expected
    ));
}
