//! `--dataplane none`: topology only; no NAT, no filtering. Records what it was told so tests
//! can check that the daemon drives the trait.
use super::*;

#[derive(Default)]
pub struct Noop {
    pub ports: Vec<PortMapping>,
}

impl Dataplane for Noop {
    fn backend(&self) -> Backend {
        Backend::None
    }
    fn ipv6(&self) -> bool {
        true
    }
    fn init(&mut self, _host: &HostInfo) -> DpResult<()> {
        Ok(())
    }
    fn network_added(&mut self, _net: &NetworkSpec) -> DpResult<()> {
        Ok(())
    }
    fn network_removed(&mut self, _net: &NetworkSpec) -> DpResult<()> {
        Ok(())
    }
    fn endpoint_added(&mut self, _net: &NetworkSpec, _ep: &EndpointSpec) -> DpResult<()> {
        Ok(())
    }
    fn endpoint_removed(&mut self, _net: &NetworkSpec, _ep: &EndpointSpec) -> DpResult<()> {
        Ok(())
    }
    fn ports_added(&mut self, _net: &NetworkSpec, ports: &[PortMapping]) -> DpResult<()> {
        for p in ports {
            if !self.ports.contains(p) {
                self.ports.push(p.clone());
            }
        }
        Ok(())
    }
    fn ports_removed(&mut self, _net: &NetworkSpec, ports: &[PortMapping]) -> DpResult<()> {
        self.ports.retain(|p| !ports.contains(p));
        Ok(())
    }
    fn links_added(&mut self, _net: &NetworkSpec, _links: &[LinkRule]) -> DpResult<()> {
        Ok(())
    }
    fn links_removed(&mut self, _net: &NetworkSpec, _links: &[LinkRule]) -> DpResult<()> {
        Ok(())
    }
    fn stats(&self) -> DpResult<Stats> {
        Ok(Stats::default())
    }
    fn shutdown(&mut self, _keep: bool) -> DpResult<()> {
        self.ports.clear();
        Ok(())
    }
}
