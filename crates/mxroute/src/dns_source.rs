//! Where a command's DNS questions go: `--nameserver`, the system's resolvers, or a zone file
//! served by the in-process lab server (`--zone`). Shared by `route`, `bulk` and `check`.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::Args;
use mx_dns::Nameservers;
use mx_lab::{LabDns, ZoneSet};

use crate::Fatal;
use crate::lab_cmd::{load_zone, start_lab};

#[derive(Args)]
pub struct DnsSource {
    /// Nameserver to ask, IP:PORT (repeatable; default: the system's resolv.conf).
    #[arg(long = "nameserver", value_name = "IP:PORT")]
    pub nameservers: Vec<SocketAddr>,
    /// Serve this zone file with the in-process lab server and resolve through it.
    #[arg(long, value_name = "FILE", conflicts_with = "nameservers")]
    pub zone: Option<PathBuf>,
    /// Origin for relative names in --zone when the file sets none.
    #[arg(long, requires = "zone")]
    pub origin: Option<String>,
}

/// The servers to ask, with the lab server (and its zones) when `--zone` started one.
pub struct Served {
    /// Empty means the system's resolvers.
    pub nameservers: Vec<SocketAddr>,
    pub zones: Option<ZoneSet>,
    lab: Option<LabDns>,
}

impl DnsSource {
    /// Starts the lab server for `--zone` (on loopback, any free port).
    pub async fn serve(&self) -> Result<Served, Fatal> {
        let Some(path) = &self.zone else {
            return Ok(Served {
                nameservers: self.nameservers.clone(),
                zones: None,
                lab: None,
            });
        };
        let zones = load_zone(path, self.origin.as_deref())?;
        let lab = start_lab(&zones, SocketAddr::from(([127, 0, 0, 1], 0))).await?;
        Ok(Served {
            nameservers: vec![lab.addr()],
            zones: Some(zones),
            lab: Some(lab),
        })
    }
}

impl Served {
    /// Whether the questions go to the in-process lab (its answers are quick: short timeouts).
    pub fn is_lab(&self) -> bool {
        self.lab.is_some()
    }

    pub fn for_hickory(&self) -> Nameservers {
        if self.nameservers.is_empty() {
            Nameservers::System
        } else {
            Nameservers::Explicit(self.nameservers.clone())
        }
    }

    pub async fn shutdown(self) {
        if let Some(lab) = self.lab {
            lab.shutdown().await;
        }
    }
}
