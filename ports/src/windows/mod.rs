//! What the Windows client changes on the system, each undone when its
//! guard is dropped (on exit, on Ctrl-C, on failure): a pinned host route to
//! the relay, the adapter's interface metric, and its network profile.

use std::io;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, PoisonError};

use windows_sys::Win32::Foundation::{ERROR_OBJECT_ALREADY_EXISTS, NO_ERROR, WIN32_ERROR};
use windows_sys::Win32::NetworkManagement::IpHelper::{
    CreateIpForwardEntry2, DeleteIpForwardEntry2, GetBestRoute2, GetIpInterfaceEntry,
    InitializeIpForwardEntry, InitializeIpInterfaceEntry, MIB_IPFORWARD_ROW2, MIB_IPINTERFACE_ROW,
    SetIpInterfaceEntry,
};
use windows_sys::Win32::NetworkManagement::Ndis::NET_LUID_LH;
use windows_sys::Win32::Networking::WinSock::{
    ADDRESS_FAMILY, AF_INET, AF_INET6, MIB_IPPROTO_NETMGMT, SOCKADDR_INET,
};

fn check(rc: WIN32_ERROR, what: &str) -> io::Result<()> {
    if rc == NO_ERROR {
        Ok(())
    } else {
        Err(io::Error::new(
            io::Error::from_raw_os_error(rc as i32).kind(),
            format!("{what}: {}", io::Error::from_raw_os_error(rc as i32)),
        ))
    }
}

fn sockaddr(ip: IpAddr) -> SOCKADDR_INET {
    // SAFETY: SOCKADDR_INET is plain data; all-zero is a valid value.
    let mut addr: SOCKADDR_INET = unsafe { std::mem::zeroed() };
    match ip {
        IpAddr::V4(v4) => {
            addr.Ipv4.sin_family = AF_INET;
            addr.Ipv4.sin_addr.S_un.S_addr = u32::from_ne_bytes(v4.octets());
        }
        IpAddr::V6(v6) => {
            addr.Ipv6.sin6_family = AF_INET6;
            addr.Ipv6.sin6_addr.u.Byte = v6.octets();
        }
    }
    addr
}

/// A host route to the relay through the interface that reaches it now, so
/// that nothing the overlay adds can pull relay traffic into the tunnel.
/// Deleted on drop (unless it existed before).
pub struct PinnedRoute {
    row: MIB_IPFORWARD_ROW2,
    relay: IpAddr,
}

impl PinnedRoute {
    /// Pins the route to `relay`; `None` when an identical route exists
    /// already (it is left alone).
    pub fn pin(relay: IpAddr) -> io::Result<Option<PinnedRoute>> {
        let dst = sockaddr(relay);
        // SAFETY: plain-data out parameters for GetBestRoute2, zeroed.
        let mut best: MIB_IPFORWARD_ROW2 = unsafe { std::mem::zeroed() };
        // SAFETY: as above.
        let mut source: SOCKADDR_INET = unsafe { std::mem::zeroed() };
        // SAFETY: every pointer is valid for the call; null means "any".
        let rc = unsafe {
            GetBestRoute2(
                std::ptr::null(),
                0,
                std::ptr::null(),
                &dst,
                0,
                &mut best,
                &mut source,
            )
        };
        check(rc, &format!("no route to the relay {relay}"))?;
        // SAFETY: InitializeIpForwardEntry fills a zeroed row with defaults.
        let mut row: MIB_IPFORWARD_ROW2 = unsafe { std::mem::zeroed() };
        // SAFETY: `row` is a valid, writable row.
        unsafe { InitializeIpForwardEntry(&mut row) };
        row.InterfaceLuid = best.InterfaceLuid;
        row.DestinationPrefix.Prefix = dst;
        row.DestinationPrefix.PrefixLength = if relay.is_ipv4() { 32 } else { 128 };
        row.NextHop = best.NextHop;
        row.Metric = 0;
        row.Protocol = MIB_IPPROTO_NETMGMT;
        // SAFETY: `row` is a fully initialised route.
        let rc = unsafe { CreateIpForwardEntry2(&row) };
        if rc == ERROR_OBJECT_ALREADY_EXISTS {
            return Ok(None);
        }
        check(rc, &format!("cannot add a host route to the relay {relay}"))?;
        tracing::info!(%relay, "host route to the relay pinned to the current uplink");
        Ok(Some(PinnedRoute { row, relay }))
    }
}

impl Drop for PinnedRoute {
    fn drop(&mut self) {
        // SAFETY: deletes exactly the row this guard created.
        let rc = unsafe { DeleteIpForwardEntry2(&self.row) };
        match check(rc, "cannot remove the pinned route") {
            Ok(()) => tracing::info!(relay = %self.relay, "pinned route to the relay removed"),
            Err(e) => tracing::warn!(relay = %self.relay, "{e}"),
        }
    }
}

/// The adapter's interface metric for one address family, restored on
/// drop. The lowest metric makes Windows send 255.255.255.255 broadcasts
/// (how most games look for LAN servers) out of the overlay adapter.
pub struct InterfaceMetric {
    luid: NET_LUID_LH,
    family: ADDRESS_FAMILY,
    automatic: u8,
    metric: u32,
}

fn interface_row(luid: NET_LUID_LH, family: ADDRESS_FAMILY) -> io::Result<MIB_IPINTERFACE_ROW> {
    // SAFETY: InitializeIpInterfaceEntry fills a zeroed row with defaults.
    let mut row: MIB_IPINTERFACE_ROW = unsafe { std::mem::zeroed() };
    // SAFETY: `row` is a valid, writable row.
    unsafe { InitializeIpInterfaceEntry(&mut row) };
    row.Family = family;
    row.InterfaceLuid = luid;
    // SAFETY: `row` names an interface and family; the call fills the rest.
    check(
        unsafe { GetIpInterfaceEntry(&mut row) },
        "cannot read the adapter's IP settings",
    )?;
    Ok(row)
}

fn set_interface_metric(
    luid: NET_LUID_LH,
    family: ADDRESS_FAMILY,
    automatic: u8,
    metric: u32,
) -> io::Result<()> {
    let mut row = interface_row(luid, family)?;
    row.UseAutomaticMetric = automatic;
    row.Metric = metric;
    // Required by SetIpInterfaceEntry for IPv4.
    row.SitePrefixLength = 0;
    // SAFETY: `row` came from GetIpInterfaceEntry and is changed in place.
    check(
        unsafe { SetIpInterfaceEntry(&mut row) },
        "cannot set the adapter's metric",
    )
}

impl InterfaceMetric {
    /// Sets `metric` (no automatic metric) for IPv4 on the adapter `luid`.
    pub fn set(luid: NET_LUID_LH, metric: u32) -> io::Result<InterfaceMetric> {
        let row = interface_row(luid, AF_INET)?;
        let saved = InterfaceMetric {
            luid,
            family: AF_INET,
            automatic: row.UseAutomaticMetric,
            metric: row.Metric,
        };
        set_interface_metric(luid, AF_INET, 0, metric)?;
        tracing::info!(
            metric,
            previous = saved.metric,
            "adapter interface metric set"
        );
        Ok(saved)
    }
}

impl Drop for InterfaceMetric {
    fn drop(&mut self) {
        if let Err(e) = set_interface_metric(self.luid, self.family, self.automatic, self.metric) {
            tracing::warn!("cannot restore the adapter's metric: {e}");
        }
    }
}

/// The adapter's network profile set to Private (so Windows Firewall lets
/// inbound game traffic in), with the previous category restored on drop.
/// Needs administrator rights (as creating a Wintun adapter does). Windows
/// only creates the profile once it has identified the network, so the
/// change runs in the background, retrying for a while.
pub struct PrivateProfile {
    alias: String,
    previous: Arc<Mutex<Option<String>>>,
}

fn powershell(script: &str) -> io::Result<String> {
    let out = std::process::Command::new("powershell")
        .args(["-NoProfile", "-NonInteractive", "-Command", script])
        .output()?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
    } else {
        Err(io::Error::other(
            String::from_utf8_lossy(&out.stderr).trim().to_string(),
        ))
    }
}

fn quoted(alias: &str) -> String {
    format!("'{}'", alias.replace('\'', "''"))
}

impl PrivateProfile {
    /// Starts setting the profile of the adapter named `alias` to Private.
    pub fn set(alias: &str) -> PrivateProfile {
        let previous = Arc::new(Mutex::new(None));
        let (name, saved) = (alias.to_string(), previous.clone());
        let spawned = std::thread::Builder::new().name("net-profile".into()).spawn(move || {
            let get = format!("(Get-NetConnectionProfile -InterfaceAlias {} -ErrorAction Stop).NetworkCategory", quoted(&name));
            for _ in 0..30 {
                if let Ok(category) = powershell(&get) {
                    if category != "Private" {
                        let set = format!("Set-NetConnectionProfile -InterfaceAlias {} -NetworkCategory Private", quoted(&name));
                        match powershell(&set) {
                            Ok(_) => {
                                *saved.lock().unwrap_or_else(PoisonError::into_inner) = Some(category);
                                tracing::info!(adapter = %name, "network profile set to Private");
                            }
                            Err(e) => tracing::warn!(adapter = %name, "cannot set the network profile to Private (run as administrator): {e}"),
                        }
                    }
                    return;
                }
                std::thread::sleep(std::time::Duration::from_secs(1));
            }
            tracing::warn!(adapter = %name, "Windows never identified the adapter's network; profile left as is");
        });
        if let Err(e) = spawned {
            tracing::warn!("cannot start the network profile thread: {e}");
        }
        PrivateProfile {
            alias: alias.to_string(),
            previous,
        }
    }
}

impl Drop for PrivateProfile {
    fn drop(&mut self) {
        let previous = self
            .previous
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(category) = previous {
            let script = format!(
                "Set-NetConnectionProfile -InterfaceAlias {} -NetworkCategory {category}",
                quoted(&self.alias)
            );
            if let Err(e) = powershell(&script) {
                tracing::warn!(adapter = %self.alias, "cannot restore the network profile: {e}");
            }
        }
    }
}
