//! pvmtest: a conformance harness and reference model for Linux `process_vm_readv(2)` and
//! `process_vm_writev(2)`.
//!
//! Where to look:
//! - [`case`]: the YAML case language; [`plan`]: validation and address layout.
//! - [`model`]: the reference model (pure; written from kernel source, see docs/SEMANTICS.md);
//!   [`race`]: the outcomes it allows when the target changes during a call.
//! - [`exec`]: forked targets and callers (the target builder is [`exec::layout`]).
//! - [`sys`]: the raw syscall layer (native and `int 0x80`), no clamping.
//! - [`check`], [`runner`], [`report`], [`cli`]: judging, running, output.

#![deny(unsafe_code)]

pub mod caps;
pub mod case;
pub mod check;
pub mod cli;
pub mod errno;
pub mod exec;
pub mod expr;
pub mod facts;
pub mod filter;
pub mod fuzzcase;
pub mod guest;
pub mod model;
pub mod pattern;
pub mod plan;
pub mod positions;
pub mod race;
pub mod report;
pub mod runner;
pub mod sys;
pub mod words;
