use serde_json::Value;

use crate::call::MetricInfo;
use crate::error::Result;
use crate::json::Args;

pub(crate) const METRICS: &[MetricInfo] = &[];

pub(crate) fn dispatch(_name: &str, _args: &Args) -> Option<Result<Value>> {
    None
}
