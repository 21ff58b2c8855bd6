//! Output formats, each reading only the report model.

pub mod html;
pub mod live;
pub mod prometheus;
pub mod terminal;
pub mod top;

/// "Filters: container web, min latency 10.00ms": what the trace was limited
/// to, for the line above a terminal report (None: not limited).
pub fn filters_line(r: &crate::report::Report) -> Option<String> {
    (!r.filters.is_empty()).then(|| {
        let mut line = format!("Filters: only {}", r.filters.summary());
        if r.counters.filtered_user > 0 {
            line.push_str(&format!(
                " ({} dropped by the filters)",
                r.counters.filtered_user
            ));
        }
        crate::text::terminal(&line)
    })
}
