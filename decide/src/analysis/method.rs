//! The analysis method a spec names, as its [`Analyzer`].

use crate::spec::Method;

use super::analyzer::Analyzer;
use super::sequential::SequentialAnalyzer;
use super::threshold::ThresholdAnalyzer;

pub fn analyzer_for(method: Method) -> &'static dyn Analyzer {
    match method {
        Method::Sequential => &SequentialAnalyzer,
        Method::Threshold => &ThresholdAnalyzer,
    }
}
