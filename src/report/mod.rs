//! Seeing a run: its curves (`plots`), one self-contained HTML page (`distill report`: the
//! recipe, the data filter table, the plots, the eval table, the exports and the speculative
//! figures; inline SVG and CSS, nothing fetched), and the runs of a folder (`distill runs`).
//!
//! The live view of a training run stays the trainer's progress bar and its plain line when
//! stdout is not a terminal: burn-train's metrics and dashboard drive burn's own `Learner`
//! loop (one model, one loss), which does not fit a teacher + student step with a streamed
//! cache, curriculum weights and on-policy rollouts.

pub mod html;
pub mod plots;
pub mod runs;

/// `s` with HTML's five special characters escaped.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests;
