//! The scenarios of issue 7, each run against every system it applies to, and issue 17's abuse
//! scenario (11).

pub mod abuse;
pub mod election;
pub mod floor;
pub mod lease;
pub mod lock;
pub mod shards;

use crate::{
    clients::Result,
    measure::CpuMeter,
    servers::{Etcd, GrpcChild, ZooKeeper},
};

/// The systems compared.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sys {
    /// zkcoord (over the ZooKeeper server).
    Zkcoord,
    /// etcd's Election, Lock and Lease services.
    Etcd,
    /// ZooKeeper recipes used directly (zookeeper-client).
    ZooKeeper,
}

impl Sys {
    pub fn name(self) -> &'static str {
        match self {
            Sys::Zkcoord => "zkcoord",
            Sys::Etcd => "etcd",
            Sys::ZooKeeper => "zookeeper",
        }
    }
}

/// The running servers and the run's settings.
#[derive(Debug)]
pub struct Bench {
    pub quick: bool,
    /// The run's temp directory (server data and logs).
    pub dir: std::path::PathBuf,
    pub zk: ZooKeeper,
    pub etcd: std::result::Result<Etcd, String>,
    pub zkcoord: GrpcChild,
}

impl Bench {
    /// The etcd client URL, or why etcd is not there.
    pub fn etcd_url(&self) -> Result<&str> {
        self.etcd.as_ref().map(|e| e.client_url.as_str()).map_err(Clone::clone)
    }

    /// Starts measuring CPU of the servers `sys` involves and of the generator.
    pub fn meter(&self, sys: Sys) -> CpuMeter {
        match sys {
            Sys::Zkcoord => {
                CpuMeter::start(&[("zkcoord", self.zkcoord.process.pid()), ("zookeeper", self.zk.process.pid())])
                    .zookeeper(self.zk.port)
            }
            Sys::ZooKeeper => CpuMeter::start(&[("zookeeper", self.zk.process.pid())]).zookeeper(self.zk.port),
            Sys::Etcd => match &self.etcd {
                Ok(etcd) => CpuMeter::start(&[("etcd", etcd.process.pid())]),
                Err(_) => CpuMeter::start(&[]),
            },
        }
    }
}
