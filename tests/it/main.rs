//! The integration tests: one test binary (compiled and linked once), one module per area. Each
//! runs the real `kinesis-agent` binary against real emulators (kinesalite, kinesis-local, moto)
//! or, for faults no emulator can make, the in-repo fake endpoint (`common::fake`). The shared
//! harness is `common` (see its module docs). Run one area with `cargo test --test it never_skip`.

mod common;

mod archives;
mod bad_input;
mod ca_bundle;
mod cloudwatch;
mod e2e_credentials;
mod e2e_daemon;
mod e2e_fault_modes;
mod e2e_faults;
mod e2e_once;
mod ec2_metadata;
mod fake_endpoint_smoke;
mod fleet;
mod identity;
mod kpl;
mod line_edges;
mod logging;
mod multiline;
mod never_skip;
mod ordering;
mod packaging;
mod partition_keys;
mod peers_smoke;
mod per_flow_destinations;
mod processing;
mod progress;
mod prometheus;
mod proxy;
mod races;
mod reload;
mod rotation;
mod startup_checks;
mod status;
mod systemd;
mod systemd_boot;
mod torture;
