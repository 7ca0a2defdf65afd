//! Reports: the spec cases' own outcome types and lines ([`spec`]), and the
//! runner's outputs over [`RunResults`](crate::results::RunResults): the
//! results table, JUnit XML and a self-contained HTML page with timelines.

pub mod escape;
pub mod html;
pub mod junit;
pub mod spec;
pub mod table;
pub mod timeline;

#[cfg(test)]
mod xmlcheck;

pub use spec::{CaseResult, Finding, SuiteReport, Verdict};
