//! `wintun` (Windows): the Windows player's adapter. A Wintun adapter
//! carries IP packets only, so the Ethernet emulation (the same layer the
//! Linux `tun-l2` port runs in the end-to-end suite) makes it a NIC on the
//! room: ARP and neighbour answers, broadcast and multicast mapping, and a
//! DHCP client that leases an address from the LAN behind the gateway.
//!
//! On start it creates (or opens) the adapter, sets its MTU to the room's,
//! pins a host route to the relay through the current uplink, gives the
//! adapter the lowest interface metric (so games' 255.255.255.255
//! broadcasts leave through it) and sets its network profile to Private.
//! Everything is undone on exit, Ctrl-C included: guards restore the metric
//! and profile, delete the route, and the adapter this port created is
//! removed when its handle closes. Needs administrator rights and
//! `wintun.dll` (<https://www.wintun.net>) next to `lanparty.exe`.

//!
//! The settings are read and checked on every platform (so `lanparty check
//! configs/client-windows.yaml` works anywhere); running needs Windows.

use std::path::PathBuf;

use lanparty_core::config::{ConfigError, StageConfig};
use lanparty_core::registry::BuildResult;
use lanparty_core::runtime::MacIdentity;
use lanparty_core::runtime::PortContext;
use lanparty_core::runtime::{Port, PortError};

use crate::emulation::Addressing;
use crate::emulation::driver::{adapter_settings, check_adapter_keys};

adapter_settings! {
    /// Windows Wintun adapter with Ethernet emulation: route pinning, lowest
    /// metric, Private profile, all undone on exit.
    #[lanparty_core::stage_kind(port, name = "wintun", build = build,
        example = "ports:\n  adapter: { type: wintun, mac: \"02:00:00:00:00:71\", pin_route: relay.example.net }")]
    #[derive(Debug, Clone)]
    pub struct WintunSettings {
        /// The adapter name Windows shows.
        #[key(default = "lanparty")]
        pub name: String,
        /// A fixed adapter GUID (`{xxxxxxxx-xxxx-…}`), so Windows keeps the
        /// same network identity across runs.
        #[key(ty = "GUID", shown = "Wintun's")]
        pub guid: Option<String>,
        /// Where wintun.dll is.
        #[key(shown = "next to lanparty.exe")]
        pub dll: Option<PathBuf>,
        /// Interface metric; the lowest gets games' broadcasts.
        #[key(default = 1)]
        pub metric: u32,
        /// The relay: a host route to it through the current uplink (no
        /// pinning without it).
        #[key(ty = "host or host:port")]
        pub pin_route: Option<String>,
        /// Set the adapter's network profile to Private (firewall).
        #[key(default = true)]
        pub private_profile: bool,
    }
}

/// Parses `{01234567-89ab-cdef-0123-456789abcdef}` (braces optional).
pub fn parse_guid(text: &str) -> Option<u128> {
    let hex: String = text
        .trim_matches(|c| c == '{' || c == '}')
        .split('-')
        .collect();
    (hex.len() == 32)
        .then(|| u128::from_str_radix(&hex, 16).ok())
        .flatten()
}

/// A configured Wintun port.
#[derive(Debug)]
pub struct WintunPort {
    settings: WintunSettings,
    #[cfg_attr(not(windows), allow(dead_code))]
    addressing: Addressing,
    #[cfg_attr(not(windows), allow(dead_code))]
    guid: Option<u128>,
}

fn build(config: &StageConfig) -> BuildResult<Box<dyn Port>> {
    let settings: WintunSettings = config.parse()?;
    let mut errors: Vec<ConfigError> = Vec::new();
    if settings.name.is_empty() || settings.name.len() > 127 {
        errors.push(config.error("name", "1..=127 characters"));
    }
    let guid = match &settings.guid {
        Some(text) => {
            let parsed = parse_guid(text);
            if parsed.is_none() {
                errors.push(
                    config.error("guid", "a GUID like {01234567-89ab-cdef-0123-456789abcdef}"),
                );
            }
            parsed
        }
        None => None,
    };
    let addressing = check_adapter_keys(config, settings.adapter_keys(), &mut errors);
    if errors.is_empty() {
        Ok(Box::new(WintunPort {
            settings,
            addressing,
            guid,
        }))
    } else {
        Err(errors)
    }
}

impl WintunPort {
    fn fail(&self, what: impl std::fmt::Display) -> PortError {
        PortError::new(
            &self.settings.name,
            format!("adapter {}: {what}", self.settings.name),
        )
    }

    #[cfg(windows)]
    async fn run(self, ctx: PortContext) -> Result<(), PortError> {
        imp::run(self, ctx).await
    }

    #[cfg(not(windows))]
    async fn run(self, ctx: PortContext) -> Result<(), PortError> {
        let _ = ctx;
        Err(self.fail("the wintun port runs on Windows only; on Linux use `tap` or `tun-l2`"))
    }
}

/// The Windows side: the adapter, its ring, and the system changes.
#[cfg(windows)]
mod imp {
    use std::net::{IpAddr, ToSocketAddrs};
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::time::Instant;

    use bytes::{Bytes, BytesMut};
    use lanparty_core::runtime::PortError;
    use lanparty_core::runtime::{LinkSpec, PortContext};
    use lanparty_core::stage::LinkRole;
    use tokio::sync::mpsc;

    use super::WintunPort;
    use crate::emulation::driver::{AdapterStatus, IpAdapter, NO_MAC, drive, emulation_seed};
    use crate::emulation::{Emulation, EmulationConfig, Event};
    use crate::windows::{InterfaceMetric, PinnedRoute, PrivateProfile};

    /// Packets waiting between the ring reader thread and the emulation.
    const QUEUE: usize = 1024;

    /// The Wintun session as the emulation driver sees it.
    struct WintunAdapter {
        name: String,
        adapter: Arc<wintun::Adapter>,
        session: Arc<wintun::Session>,
        packets: mpsc::Receiver<Bytes>,
    }

    impl IpAdapter for WintunAdapter {
        fn name(&self) -> &str {
            &self.name
        }

        async fn recv(&mut self, out: &mut Vec<Bytes>) -> Result<(), String> {
            if self.packets.recv_many(out, 64).await == 0 {
                return Err("the Wintun session ended".into());
            }
            Ok(())
        }

        async fn send(&mut self, packet: &[u8]) -> Result<(), String> {
            let len = u16::try_from(packet.len()).map_err(|_| "packet too large".to_string())?;
            let mut buf = self
                .session
                .allocate_send_packet(len)
                .map_err(|e| format!("the Wintun ring is full: {e}"))?;
            buf.bytes_mut().copy_from_slice(packet);
            self.session.send_packet(buf);
            Ok(())
        }

        fn apply(&mut self, event: &Event) {
            match event {
                Event::Configure(c) => {
                    let mask = crate::inet::ipv4_netmask(c.prefix);
                    // No gateway on the adapter: the player's internet traffic
                    // stays on its own uplink.
                    match self.adapter.set_network_addresses_tuple(
                        IpAddr::V4(c.addr),
                        IpAddr::V4(mask),
                        None,
                    ) {
                        Ok(()) => {
                            tracing::info!(adapter = %self.name, address = %c.addr, prefix = c.prefix, "adapter address set")
                        }
                        Err(e) => {
                            tracing::error!(adapter = %self.name, address = %c.addr, "cannot set the adapter address: {e}")
                        }
                    }
                }
                Event::Deconfigure(c) => {
                    tracing::warn!(adapter = %self.name, address = %c.addr, "lease lost: address removed");
                    let out = std::process::Command::new("netsh")
                        .args([
                            "interface",
                            "ipv4",
                            "set",
                            "address",
                            &format!("name={}", self.name),
                            "source=dhcp",
                        ])
                        .output();
                    if let Err(e) = out {
                        tracing::warn!(adapter = %self.name, "cannot remove the address: {e}");
                    }
                }
            }
        }

        fn set_mtu(&mut self, mtu: u16) {
            match self.adapter.set_mtu(usize::from(mtu)) {
                Ok(()) => tracing::info!(adapter = %self.name, mtu, "MTU follows the room"),
                Err(e) => tracing::warn!(adapter = %self.name, mtu, "cannot set MTU: {e}"),
            }
        }
    }

    /// Ends the ring reader thread when dropped.
    struct SessionGuard(Arc<wintun::Session>);

    impl Drop for SessionGuard {
        fn drop(&mut self) {
            let _ = self.0.shutdown();
        }
    }

    /// Reads the ring on its own thread (Wintun's receive blocks), copying
    /// packets into shared chunks, never waiting on the emulation: a full queue
    /// drops and counts.
    fn spawn_reader(
        session: Arc<wintun::Session>,
        tx: mpsc::Sender<Bytes>,
        dropped: Arc<AtomicU64>,
    ) -> std::io::Result<()> {
        std::thread::Builder::new()
            .name("wintun-rx".into())
            .spawn(move || {
                let mut chunk = BytesMut::new();
                while let Ok(packet) = session.receive_blocking() {
                    let bytes = packet.bytes();
                    if chunk.capacity() - chunk.len() < bytes.len() {
                        chunk = BytesMut::with_capacity((64 * 1024).max(bytes.len()));
                    }
                    chunk.extend_from_slice(bytes);
                    match tx.try_send(chunk.split().freeze()) {
                        Ok(()) => {}
                        Err(mpsc::error::TrySendError::Full(_)) => {
                            dropped.fetch_add(1, Ordering::Relaxed);
                        }
                        Err(mpsc::error::TrySendError::Closed(_)) => break,
                    }
                }
            })?;
        Ok(())
    }

    impl WintunPort {
        fn open_adapter(&self) -> Result<Arc<wintun::Adapter>, PortError> {
            // SAFETY: loads wintun.dll, whose exports wintun's bindings match.
            let library = unsafe {
            match &self.settings.dll {
                Some(path) => wintun::load_from_path(path),
                None => wintun::load(),
            }
        }
        .map_err(|e| self.fail(format!("cannot load wintun.dll ({e}); download it from https://www.wintun.net and put it next to lanparty.exe, or set `dll:`")))?;
            match wintun::Adapter::open(&library, &self.settings.name) {
                Ok(adapter) => {
                    tracing::info!(adapter = %self.settings.name, "opened the existing Wintun adapter");
                    Ok(adapter)
                }
                Err(_) => {
                    wintun::Adapter::create(&library, &self.settings.name, "lanparty", self.guid)
                        .map_err(|e| {
                            self.fail(format!(
                                "cannot create the Wintun adapter (run as administrator): {e}"
                            ))
                        })
                }
            }
        }

        async fn run_windows(self, ctx: PortContext) -> Result<(), PortError> {
            let mac = self.settings.mac.ok_or_else(|| self.fail(NO_MAC))?;
            let adapter = self.open_adapter()?;
            let mut link = ctx.attach(
                &self.settings.room,
                LinkSpec {
                    name: self.settings.name.clone(),
                    role: LinkRole::Host,
                    macs: vec![mac],
                    mtu: self.settings.mtu,
                    sink: None,
                },
            );
            let mtu = self.settings.mtu.unwrap_or(*link.mtu().borrow());
            if let Err(e) = adapter.set_mtu(usize::from(mtu)) {
                tracing::warn!(adapter = %self.settings.name, mtu, "cannot set MTU: {e}");
            }
            let _route = match &self.settings.pin_route {
                Some(relay) => {
                    let ip = resolve(relay).map_err(|e| self.fail(e))?;
                    PinnedRoute::pin(ip).map_err(|e| self.fail(e))?
                }
                None => None,
            };
            let _metric = InterfaceMetric::set(adapter.get_luid(), self.settings.metric)
                .map_err(|e| self.fail(e))?;
            let _profile = self
                .settings
                .private_profile
                .then(|| PrivateProfile::set(&self.settings.name));
            let session = Arc::new(
                adapter
                    .start_session(wintun::MAX_RING_CAPACITY)
                    .map_err(|e| self.fail(format!("cannot start the Wintun session: {e}")))?,
            );
            let _session_guard = SessionGuard(session.clone());
            let (tx, rx) = mpsc::channel(QUEUE);
            let dropped = Arc::new(AtomicU64::new(0));
            spawn_reader(session.clone(), tx, dropped.clone())
                .map_err(|e| self.fail(format!("cannot start the ring reader: {e}")))?;
            let mut emulation = Emulation::new(
                EmulationConfig::new(mac, self.addressing.clone()),
                emulation_seed(),
                Instant::now(),
            );
            tracing::info!(adapter = %self.settings.name, %mac, mtu, room = %self.settings.room, addressing = emulation.dhcp_state(), "Wintun adapter up with Ethernet emulation");
            let status = Arc::new(AdapterStatus::new(
                "wintun",
                &self.settings.name,
                &emulation,
            ));
            ctx.publish_status(status.clone());
            let mut wintun_adapter = WintunAdapter {
                name: self.settings.name.clone(),
                adapter: adapter.clone(),
                session,
                packets: rx,
            };
            let result = drive(
                &mut wintun_adapter,
                &mut emulation,
                &mut link,
                self.settings.mtu.is_none(),
                ctx.shutdown(),
                &status,
            )
            .await
            .map_err(|e| self.fail(e));
            let c = emulation.counters();
            tracing::info!(adapter = %self.settings.name, outbound = c.outbound, inbound = c.inbound, ring_dropped = dropped.load(Ordering::Relaxed), "wintun port stopped; undoing system changes");
            result
        }
    }

    /// The relay's IP from `host`, `host:port` or an address.
    fn resolve(relay: &str) -> Result<IpAddr, String> {
        if let Ok(ip) = relay.parse::<IpAddr>() {
            return Ok(ip);
        }
        let with_port = if relay.contains(':') {
            relay.to_string()
        } else {
            format!("{relay}:443")
        };
        with_port
            .to_socket_addrs()
            .map_err(|e| format!("pin_route: cannot resolve {relay}: {e}"))?
            .next()
            .map(|a| a.ip())
            .ok_or_else(|| format!("pin_route: {relay} has no address"))
    }

    /// Runs the port.
    pub async fn run(port: WintunPort, ctx: PortContext) -> Result<(), PortError> {
        port.run_windows(ctx).await
    }
}

impl WintunPort {
    fn mac_identity(&mut self) -> MacIdentity<'_> {
        MacIdentity::Adapter {
            mac: &mut self.settings.mac,
            required: true,
        }
    }
}

lanparty_core::impl_port!(WintunPort, mac_identity);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guids_parse_with_or_without_braces() {
        assert_eq!(
            parse_guid("{01234567-89ab-cdef-0123-456789abcdef}"),
            Some(0x0123_4567_89ab_cdef_0123_4567_89ab_cdef)
        );
        assert!(parse_guid("01234567-89ab-cdef-0123-456789abcdef").is_some());
        assert!(parse_guid("nope").is_none());
    }
}
