//! The relay's room rules, sans-IO: which hello is admitted to which room,
//! with which peer id and MTU, and who must be told about joins and leaves.
//!
//! - rooms are created on first admission and dropped after the last peer
//!   leaves; at most `max_rooms` at once;
//! - at most `max_peers` per room; at most one gateway per room;
//! - no two peers in a room with the same MAC;
//! - the room MTU is the configured one (the relay's `room.mtu`, or the
//!   room policy's `mtu`), whatever the peers' paths carry: a frame larger
//!   than a path's datagram travels in fragments. It is fixed when the room
//!   is created; a peer whose datagram budget cannot carry a full frame
//!   even in the most fragments allowed is rejected with
//!   `budget_too_small`;
//! - a room's policy, when it has one, overrides `max_peers` and the MTU
//!   ceiling, decides the gateway seat (required / allowed / forbidden) and
//!   may list the only client MACs admitted. Credentials are checked before
//!   (they need a slow hash, see `credentials.rs`).

use std::collections::{BTreeMap, HashMap};

use lanparty_core::config::{GatewayRule, RoomPolicy};
use lanparty_core::control::{
    ControlMessage, Hello, PROTOCOL_VERSION, PeerId, PeerRole, Reject, RejectCode,
};
use lanparty_core::wire::MacAddr;
use lanparty_core::wire::fragment::MAX_FRAGMENTS;
use lanparty_core::wire::mtu::budget_carries;
use tokio::sync::mpsc;

/// Limits of a relay.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Rooms at once.
    pub max_rooms: usize,
    /// Peers per room.
    pub max_peers: usize,
    /// The room MTU ceiling.
    pub mtu: u16,
}

/// A member of a room.
#[derive(Debug, Clone)]
struct Member {
    role: PeerRole,
    mac: MacAddr,
    events: mpsc::Sender<ControlMessage>,
}

#[derive(Debug)]
struct RoomState {
    mtu: u16,
    members: BTreeMap<PeerId, Member>,
}

/// What an admitted peer learns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Admitted {
    /// Its peer id.
    pub peer_id: PeerId,
    /// The room MTU.
    pub mtu: u16,
    /// True when this admission created the room.
    pub created_room: bool,
    /// The peers already in the room: id, role, MAC.
    pub others: Vec<(PeerId, PeerRole, MacAddr)>,
}

/// The policy rules that depend on who is in the room.
fn check_room_rules(policy: &RoomPolicy, hello: &Hello, room: &RoomState) -> Result<(), Reject> {
    let has_gateway = room.members.values().any(|m| m.role == PeerRole::Gateway);
    match (hello.role, policy.gateway) {
        (PeerRole::Gateway, GatewayRule::Forbidden) => {
            return Err(reject(
                RejectCode::RoleForbidden,
                format!(
                    "room {} admits no gateway (its policy says gateway: forbidden)",
                    hello.room
                ),
            ));
        }
        (PeerRole::Client, GatewayRule::Required) if !has_gateway => {
            return Err(reject(
                RejectCode::NoGateway,
                format!(
                    "room {} admits clients only while its gateway is connected; retrying",
                    hello.room
                ),
            ));
        }
        _ => {}
    }
    if hello.role == PeerRole::Client
        && let Some(allowed) = &policy.allowed_macs
        && !allowed.contains(&hello.mac)
    {
        return Err(reject(
            RejectCode::Unauthorized,
            format!(
                "MAC {} is not on room {}'s list of allowed MACs",
                hello.mac, hello.room
            ),
        ));
    }
    Ok(())
}

/// All rooms of a relay, as the admission rules see them.
#[derive(Debug)]
pub struct Admissions {
    limits: Limits,
    rooms: HashMap<String, RoomState>,
    next_peer: u64,
    events_dropped: u64,
}

fn reject(code: RejectCode, message: impl Into<String>) -> Reject {
    Reject {
        code,
        message: message.into(),
    }
}

impl Admissions {
    /// An empty relay.
    pub fn new(limits: Limits) -> Admissions {
        Admissions {
            limits,
            rooms: HashMap::new(),
            next_peer: 1,
            events_dropped: 0,
        }
    }

    /// Number of rooms.
    pub fn room_count(&self) -> usize {
        self.rooms.len()
    }

    /// Number of peers in `room`.
    pub fn peer_count(&self, room: &str) -> usize {
        self.rooms.get(room).map_or(0, |r| r.members.len())
    }

    /// Control events that were dropped because a peer's queue was full.
    pub fn events_dropped(&self) -> u64 {
        self.events_dropped
    }

    /// Decides on a hello. `path_budget` is the largest datagram the relay
    /// can send on this connection; `events` receives this peer's room
    /// notifications; `policy` is the room's policy, if it has one.
    pub fn admit(
        &mut self,
        hello: &Hello,
        path_budget: usize,
        events: mpsc::Sender<ControlMessage>,
        policy: Option<&RoomPolicy>,
    ) -> Result<Admitted, Reject> {
        if hello.protocol_version != PROTOCOL_VERSION {
            return Err(reject(
                RejectCode::VersionMismatch,
                format!(
                    "this relay speaks protocol version {PROTOCOL_VERSION}, the peer {}; update lanparty",
                    hello.protocol_version
                ),
            ));
        }
        if let Err(e) = hello.validate() {
            let code = match e.field {
                "room" => RejectCode::BadRoomCode,
                "mac" => RejectCode::BadMac,
                _ => RejectCode::Malformed,
            };
            return Err(reject(code, e.to_string()));
        }
        let budget = (hello.datagram_budget as usize).min(path_budget);
        let created_room = !self.rooms.contains_key(&hello.room);
        if created_room {
            if self.rooms.len() >= self.limits.max_rooms {
                return Err(reject(
                    RejectCode::RelayFull,
                    format!(
                        "the relay holds its maximum of {} rooms; try again later",
                        self.limits.max_rooms
                    ),
                ));
            }
            let room = RoomState {
                mtu: policy.and_then(|p| p.mtu).unwrap_or(self.limits.mtu),
                members: BTreeMap::new(),
            };
            self.rooms.insert(hello.room.clone(), room);
        }
        let result = self.join(hello, budget, events, policy);
        if result.is_err() && created_room {
            self.rooms.remove(&hello.room);
        }
        result.map(|mut admitted| {
            admitted.created_room = created_room;
            admitted
        })
    }

    fn join(
        &mut self,
        hello: &Hello,
        budget: usize,
        events: mpsc::Sender<ControlMessage>,
        policy: Option<&RoomPolicy>,
    ) -> Result<Admitted, Reject> {
        let max_peers = policy
            .and_then(|p| p.max_peers)
            .unwrap_or(self.limits.max_peers);
        let Some(room) = self.rooms.get_mut(&hello.room) else {
            return Err(reject(
                RejectCode::Malformed,
                "room vanished during admission",
            ));
        };
        if room.members.len() >= max_peers {
            return Err(reject(
                RejectCode::RoomFull,
                format!("room {} is full ({max_peers} peers)", hello.room),
            ));
        }
        if let Some(policy) = policy {
            check_room_rules(policy, hello, room)?;
        }
        if hello.role == PeerRole::Gateway
            && room.members.values().any(|m| m.role == PeerRole::Gateway)
        {
            return Err(reject(
                RejectCode::GatewayPresent,
                format!("room {} already has a gateway", hello.room),
            ));
        }
        if room.members.values().any(|m| m.mac == hello.mac) {
            return Err(reject(
                RejectCode::DuplicateMac,
                format!(
                    "MAC {} is already in use in room {}; pick another virtual MAC",
                    hello.mac, hello.room
                ),
            ));
        }
        if !budget_carries(budget, room.mtu) {
            return Err(reject(
                RejectCode::BudgetTooSmall,
                format!(
                    "room {} runs at MTU {}: {budget}-byte datagrams cannot carry its frames even in {MAX_FRAGMENTS} fragments",
                    hello.room, room.mtu
                ),
            ));
        }
        let peer_id = PeerId(self.next_peer);
        self.next_peer += 1;
        let others = room
            .members
            .iter()
            .map(|(id, m)| (*id, m.role, m.mac))
            .collect();
        let joined = ControlMessage::PeerJoined {
            peer_id,
            role: hello.role,
            mac: hello.mac,
        };
        let mut dropped = 0;
        for member in room.members.values() {
            if member.events.try_send(joined.clone()).is_err() {
                dropped += 1;
            }
        }
        room.members.insert(
            peer_id,
            Member {
                role: hello.role,
                mac: hello.mac,
                events,
            },
        );
        self.events_dropped += dropped;
        Ok(Admitted {
            peer_id,
            mtu: room.mtu,
            created_room: false,
            others,
        })
    }

    /// Removes a peer, tells the others, and drops the room if it is empty.
    /// Returns true if the room was dropped.
    pub fn leave(&mut self, room_code: &str, peer_id: PeerId, reason: &str) -> bool {
        let Some(room) = self.rooms.get_mut(room_code) else {
            return false;
        };
        if room.members.remove(&peer_id).is_none() {
            return false;
        }
        let left = ControlMessage::PeerLeft {
            peer_id,
            reason: reason.chars().take(200).collect(),
        };
        for member in room.members.values() {
            if member.events.try_send(left.clone()).is_err() {
                self.events_dropped += 1;
            }
        }
        if room.members.is_empty() {
            self.rooms.remove(room_code);
            return true;
        }
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hello(room: &str, role: PeerRole, mac: u8) -> Hello {
        Hello {
            protocol_version: PROTOCOL_VERSION,
            role,
            room: room.into(),
            mac: MacAddr([2, 0, 0, 0, 0, mac]),
            datagram_budget: 1414,
            credential: None,
            header_compression: false,
        }
    }

    fn limits() -> Limits {
        Limits {
            max_rooms: 2,
            max_peers: 3,
            mtu: 1394,
        }
    }

    fn events() -> (mpsc::Sender<ControlMessage>, mpsc::Receiver<ControlMessage>) {
        mpsc::channel(8)
    }

    fn code(r: Result<Admitted, Reject>) -> RejectCode {
        r.expect_err("admitted").code
    }

    #[test]
    fn admits_and_notifies() {
        let mut a = Admissions::new(limits());
        let (tx1, mut rx1) = events();
        let first = a
            .admit(&hello("R", PeerRole::Gateway, 1), 1414, tx1, None)
            .unwrap();
        assert!(first.created_room);
        assert_eq!(first.mtu, 1394);
        assert!(first.others.is_empty());
        let second = a
            .admit(&hello("R", PeerRole::Client, 2), 1414, events().0, None)
            .unwrap();
        assert!(!second.created_room);
        assert_ne!(second.peer_id, first.peer_id);
        assert_eq!(
            second.others,
            vec![(
                first.peer_id,
                PeerRole::Gateway,
                MacAddr([2, 0, 0, 0, 0, 1])
            )]
        );
        assert!(
            matches!(rx1.try_recv().unwrap(), ControlMessage::PeerJoined { peer_id, .. } if peer_id == second.peer_id)
        );
        assert!(!a.leave("R", second.peer_id, "bye"));
        assert!(
            matches!(rx1.try_recv().unwrap(), ControlMessage::PeerLeft { peer_id, .. } if peer_id == second.peer_id)
        );
        assert!(a.leave("R", first.peer_id, "bye"));
        assert_eq!(a.room_count(), 0);
    }

    #[test]
    fn every_reject_code() {
        let mut a = Admissions::new(limits());
        a.admit(&hello("R", PeerRole::Gateway, 1), 1414, events().0, None)
            .unwrap();
        assert_eq!(
            code(a.admit(&hello("R", PeerRole::Gateway, 9), 1414, events().0, None)),
            RejectCode::GatewayPresent
        );
        assert_eq!(
            code(a.admit(&hello("R", PeerRole::Client, 1), 1414, events().0, None)),
            RejectCode::DuplicateMac
        );
        a.admit(&hello("R", PeerRole::Client, 2), 1414, events().0, None)
            .unwrap();
        a.admit(&hello("R", PeerRole::Client, 3), 1414, events().0, None)
            .unwrap();
        assert_eq!(
            code(a.admit(&hello("R", PeerRole::Client, 4), 1414, events().0, None)),
            RejectCode::RoomFull
        );
        a.admit(&hello("S", PeerRole::Client, 1), 1414, events().0, None)
            .unwrap();
        assert_eq!(
            code(a.admit(&hello("T", PeerRole::Client, 1), 1414, events().0, None)),
            RejectCode::RelayFull
        );
        assert_eq!(
            code(a.admit(&hello("S", PeerRole::Client, 5), 80, events().0, None)),
            RejectCode::BudgetTooSmall
        );
        let mut h = hello("S", PeerRole::Client, 6);
        h.protocol_version = PROTOCOL_VERSION + 1;
        assert_eq!(
            code(a.admit(&h, 1414, events().0, None)),
            RejectCode::VersionMismatch
        );
        let mut h = hello("bad room", PeerRole::Client, 6);
        assert_eq!(
            code(a.admit(&h, 1414, events().0, None)),
            RejectCode::BadRoomCode
        );
        h.room = "S".into();
        h.mac = MacAddr::BROADCAST;
        assert_eq!(
            code(a.admit(&h, 1414, events().0, None)),
            RejectCode::BadMac
        );
        // Rejections leave no trace.
        assert_eq!(a.room_count(), 2);
        assert_eq!(a.peer_count("R"), 3);
    }

    #[test]
    fn the_room_mtu_is_the_configured_one_whatever_the_path_carries() {
        let mut a = Admissions::new(Limits {
            max_rooms: 4,
            max_peers: 8,
            mtu: 1500,
        });
        // A path fresh out of the handshake (1162-byte datagrams) joins a
        // room of MTU 1500: its larger frames travel in fragments.
        let first = a
            .admit(&hello("R", PeerRole::Client, 1), 1162, events().0, None)
            .unwrap();
        assert_eq!(first.mtu, 1500);
        let second = a
            .admit(&hello("R", PeerRole::Client, 2), 1414, events().0, None)
            .unwrap();
        assert_eq!(second.mtu, 1500);
        // Jumbo rooms too, as long as 16 fragments carry a frame.
        let mut jumbo = Admissions::new(Limits {
            max_rooms: 4,
            max_peers: 8,
            mtu: 9000,
        });
        assert_eq!(
            jumbo
                .admit(&hello("J", PeerRole::Client, 1), 1162, events().0, None)
                .unwrap()
                .mtu,
            9000
        );
        assert_eq!(
            code(jumbo.admit(&hello("J", PeerRole::Client, 2), 500, events().0, None)),
            RejectCode::BudgetTooSmall
        );
        // A budget that cannot carry a frame even in fragments creates no room.
        assert_eq!(
            code(a.admit(&hello("T", PeerRole::Client, 1), 80, events().0, None)),
            RejectCode::BudgetTooSmall
        );
        assert_eq!(a.room_count(), 1);
        // The path budget bounds the advertised one.
        let mut claims = hello("U", PeerRole::Client, 1);
        claims.datagram_budget = 9000;
        assert_eq!(
            code(a.admit(&claims, 80, events().0, None)),
            RejectCode::BudgetTooSmall
        );
    }

    #[test]
    fn a_peer_that_never_reads_does_not_block_others() {
        let mut a = Admissions::new(limits());
        let (tx, _rx_never_read) = mpsc::channel(1);
        a.admit(&hello("R", PeerRole::Client, 1), 1414, tx, None)
            .unwrap();
        let p2 = a
            .admit(&hello("R", PeerRole::Client, 2), 1414, events().0, None)
            .unwrap();
        a.leave("R", p2.peer_id, "x");
        a.admit(&hello("R", PeerRole::Client, 3), 1414, events().0, None)
            .unwrap();
        assert_eq!(a.events_dropped(), 2);
    }

    fn policy(json: &str) -> RoomPolicy {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn a_policy_overrides_limits_and_mtu_for_its_room_only() {
        let mut a = Admissions::new(limits());
        let p = policy(r#"{"max_peers": 1, "mtu": 1280}"#);
        let first = a
            .admit(&hello("P", PeerRole::Client, 1), 1414, events().0, Some(&p))
            .unwrap();
        assert_eq!(first.mtu, 1280, "the policy's MTU is the room's");
        assert_eq!(
            code(a.admit(&hello("P", PeerRole::Client, 2), 1414, events().0, Some(&p))),
            RejectCode::RoomFull
        );
        // Another room keeps the relay's limits.
        let other = a
            .admit(&hello("Q", PeerRole::Client, 1), 1414, events().0, None)
            .unwrap();
        assert_eq!(other.mtu, 1394);
        a.admit(&hello("Q", PeerRole::Client, 2), 1414, events().0, None)
            .unwrap();
    }

    #[test]
    fn gateway_rules_and_allowed_macs() {
        let mut a = Admissions::new(limits());
        let forbidden = policy(r#"{"gateway": "forbidden"}"#);
        assert_eq!(
            code(a.admit(
                &hello("F", PeerRole::Gateway, 1),
                1414,
                events().0,
                Some(&forbidden)
            )),
            RejectCode::RoleForbidden
        );
        let required = policy(r#"{"gateway": "required"}"#);
        let early = a.admit(
            &hello("G", PeerRole::Client, 2),
            1414,
            events().0,
            Some(&required),
        );
        assert_eq!(code(early), RejectCode::NoGateway);
        assert!(
            !RejectCode::NoGateway.is_final(),
            "clients keep trying until the gateway comes"
        );
        a.admit(
            &hello("G", PeerRole::Gateway, 1),
            1414,
            events().0,
            Some(&required),
        )
        .unwrap();
        a.admit(
            &hello("G", PeerRole::Client, 2),
            1414,
            events().0,
            Some(&required),
        )
        .unwrap();
        let listed = policy(r#"{"allowed_macs": ["02:00:00:00:00:07"]}"#);
        assert_eq!(
            code(a.admit(
                &hello("M", PeerRole::Client, 8),
                1414,
                events().0,
                Some(&listed)
            )),
            RejectCode::Unauthorized
        );
        a.admit(
            &hello("M", PeerRole::Client, 7),
            1414,
            events().0,
            Some(&listed),
        )
        .unwrap();
    }
}
