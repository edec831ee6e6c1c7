//! Small PNG plots for reports (bars, lines, heatmaps). Placeholder API: implemented by its owner.
use std::path::Path;

/// The one error type of this crate.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0}")]
    Msg(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// One named line of a line chart.
#[derive(Clone, Debug)]
pub struct Series {
    pub label: String,
    pub points: Vec<(f64, f64)>,
}

/// One bar per label.
pub fn bar_chart(_path: &Path, _title: &str, _labels: &[String], _values: &[f64], _y_label: &str) -> Result<()> {
    Err(Error::Msg("not implemented yet".into()))
}

/// Bars grouped by `groups`, one colour per series; `values[series][group]`.
pub fn grouped_bar_chart(_path: &Path, _title: &str, _groups: &[String], _series: &[String], _values: &[Vec<f64>], _y_label: &str) -> Result<()> {
    Err(Error::Msg("not implemented yet".into()))
}

/// Lines with markers and a legend.
pub fn line_chart(_path: &Path, _title: &str, _x_label: &str, _y_label: &str, _series: &[Series]) -> Result<()> {
    Err(Error::Msg("not implemented yet".into()))
}

/// A matrix as coloured cells, each annotated with its value; `values[row][col]`.
pub fn heatmap(_path: &Path, _title: &str, _rows: &[String], _cols: &[String], _values: &[Vec<f64>]) -> Result<()> {
    Err(Error::Msg("not implemented yet".into()))
}
