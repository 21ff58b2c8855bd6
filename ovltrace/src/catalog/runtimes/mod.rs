//! One resolver per container runtime, each claiming its own containers'
//! overlay mounts.

pub mod containerd;
pub mod docker;
pub mod podman;
