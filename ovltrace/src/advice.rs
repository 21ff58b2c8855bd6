//! Advice backed by numbers: where a volume would avoid copy-ups, and where
//! a layer stack is deep enough to slow lookups.

use crate::{
    aggregate::Aggregator,
    report::{Advice, Report},
};

pub fn advise(_agg: &Aggregator, _report: &Report) -> Vec<Advice> {
    Vec::new()
}
