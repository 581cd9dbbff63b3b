//! kernel-matrix: fetch Debian kernels (or take a local bzImage), boot each under QEMU with an
//! initramfs holding a static pvmtest and the cases, and collect per-kernel results.
//!
//! Where things are: `kernels` (kernels.yaml), `archive` + `cache` + `deb` + `fetch`
//! (getting an image), `build` (an image from a source tree), `image` (what a bzImage says about itself), `initramfs`, `boot`
//! (qemu), `matrix` (scheduling, sharding), `report` (table, report.md, KTAP, JSON), `compare` (the verdict on changed cases),
//! `coverage` (gcov of the syscall path), `runtime` (gVisor, UML and qemu-user rows, runtimes.yaml),
//! `conformance` (known divergences of a runtime).

pub mod archive;
pub mod boot;
pub mod build;
pub mod cache;
pub mod cli;
pub mod compare;
pub mod conformance;
pub mod coverage;
pub mod deb;
pub mod error;
pub mod exec;
pub mod fetch;
pub mod fuzz;
pub mod image;
pub mod initramfs;
pub mod kernels;
pub mod matrix;
pub mod report;
pub mod runtime;
pub mod vmlinux;

pub use error::{Error, Result};
