//! A small, dependency-free SVG line chart: stacked panels sharing the x axis (seconds of a
//! run), each with its own linear or log-scaled y axis. Used by `eddy load-gen --plot` and the
//! benchmark report; no fonts or native libraries needed.
//!
//! ```
//! use eddy_load_gen::plot::{Panel, Series, Scale, svg};
//! let panel = Panel {
//!     title: "throughput".into(),
//!     unit: "msg/s".into(),
//!     scale: Scale::Linear,
//!     series: vec![Series { name: "acked".into(), points: vec![(0.0, 10.0), (1.0, 12.0)] }],
//! };
//! let doc = svg("run", &[panel]);
//! assert!(doc.starts_with("<svg") && doc.contains("acked") && doc.contains("<polyline"));
//! ```

use std::fmt::Write;

/// How a panel's y axis maps values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scale {
    /// From 0 to a rounded maximum.
    Linear,
    /// Decades; values ≤ 0 are not drawn.
    Log,
}

/// One line.
#[derive(Debug, Clone)]
pub struct Series {
    /// Legend text.
    pub name: String,
    /// (x, y) points, x ascending.
    pub points: Vec<(f64, f64)>,
}

/// One chart: a title, a y unit, a scale and its lines.
#[derive(Debug, Clone)]
pub struct Panel {
    /// Panel title.
    pub title: String,
    /// Unit of the y axis.
    pub unit: String,
    /// Y scale.
    pub scale: Scale,
    /// Lines, drawn in palette order.
    pub series: Vec<Series>,
}

const PALETTE: [&str; 6] = [
    "#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b",
];
const WIDTH: f64 = 960.0;
const PANEL_H: f64 = 230.0;
const LEFT: f64 = 80.0;
const RIGHT: f64 = 190.0;
const TOP: f64 = 40.0;
const GAP: f64 = 50.0;

/// A "nice" step (1, 2 or 5 × 10^n) for about `ticks` ticks up to `max`.
fn nice_step(max: f64, ticks: f64) -> f64 {
    let raw = (max / ticks).max(f64::MIN_POSITIVE);
    let mag = 10f64.powf(raw.log10().floor());
    let norm = raw / mag;
    mag * if norm <= 1.0 {
        1.0
    } else if norm <= 2.0 {
        2.0
    } else if norm <= 5.0 {
        5.0
    } else {
        10.0
    }
}

fn label(v: f64) -> String {
    let a = v.abs();
    if a >= 1e6 {
        format!("{}M", trim(v / 1e6))
    } else if a >= 1e3 {
        format!("{}k", trim(v / 1e3))
    } else {
        trim(v)
    }
}

fn trim(v: f64) -> String {
    let s = format!("{v:.2}");
    s.trim_end_matches('0').trim_end_matches('.').to_string()
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// Renders `panels` stacked under `title`, sharing the x axis (seconds).
pub fn svg(title: &str, panels: &[Panel]) -> String {
    let height = TOP + panels.len() as f64 * (PANEL_H + GAP) + 10.0;
    let plot_w = WIDTH - LEFT - RIGHT;
    let xs = panels
        .iter()
        .flat_map(|p| p.series.iter().flat_map(|s| s.points.iter().map(|q| q.0)));
    let x_max = xs.fold(1.0f64, f64::max);
    let x_step = nice_step(x_max, 10.0);
    let x_max = (x_max / x_step).ceil() * x_step;
    let mut out = String::new();
    let _ = writeln!(
        out,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(
        out,
        r#"<rect width="100%" height="100%" fill="white"/><text x="{LEFT}" y="24" font-size="16" font-weight="bold">{}</text>"#,
        escape(title)
    );
    for (i, panel) in panels.iter().enumerate() {
        let y0 = TOP + i as f64 * (PANEL_H + GAP) + 20.0;
        let ys = panel
            .series
            .iter()
            .flat_map(|s| s.points.iter().map(|q| q.1))
            .filter(|y| y.is_finite() && (panel.scale == Scale::Linear || *y > 0.0));
        let (lo, hi) = ys.fold((f64::MAX, f64::MIN), |(a, b), y| (a.min(y), b.max(y)));
        let empty = lo > hi;
        // y axis range and ticks
        let (y_lo, y_hi, ticks): (f64, f64, Vec<f64>) = match panel.scale {
            Scale::Linear => {
                let hi = if empty || hi <= 0.0 { 1.0 } else { hi };
                let step = nice_step(hi, 5.0);
                let top = (hi / step).ceil() * step;
                let n = (top / step).round() as usize;
                (0.0, top, (0..=n).map(|k| k as f64 * step).collect())
            }
            Scale::Log => {
                let (lo, hi) = if empty { (1.0, 10.0) } else { (lo, hi) };
                let a = lo.log10().floor();
                let b = hi.log10().ceil().max(a + 1.0);
                let ticks = (a as i32..=b as i32).map(|e| 10f64.powi(e)).collect();
                (10f64.powf(a), 10f64.powf(b), ticks)
            }
        };
        let map_y = |y: f64| -> f64 {
            let f = match panel.scale {
                Scale::Linear => (y - y_lo) / (y_hi - y_lo),
                Scale::Log => (y.log10() - y_lo.log10()) / (y_hi.log10() - y_lo.log10()),
            };
            y0 + PANEL_H - f.clamp(0.0, 1.0) * PANEL_H
        };
        let map_x = |x: f64| LEFT + (x / x_max).clamp(0.0, 1.0) * plot_w;
        let _ = writeln!(
            out,
            r#"<text x="{LEFT}" y="{}" font-weight="bold">{} ({})</text>"#,
            y0 - 8.0,
            escape(&panel.title),
            escape(&panel.unit)
        );
        let _ = writeln!(
            out,
            r##"<rect x="{LEFT}" y="{y0}" width="{plot_w}" height="{PANEL_H}" fill="none" stroke="#444"/>"##
        );
        for t in &ticks {
            let y = map_y(*t);
            let _ = writeln!(
                out,
                r##"<line x1="{LEFT}" y1="{y:.1}" x2="{}" y2="{y:.1}" stroke="#ddd"/><text x="{}" y="{:.1}" text-anchor="end">{}</text>"##,
                LEFT + plot_w,
                LEFT - 6.0,
                y + 4.0,
                label(*t)
            );
        }
        let mut x = 0.0;
        while x <= x_max + 1e-9 {
            let px = map_x(x);
            let _ = writeln!(
                out,
                r##"<line x1="{px:.1}" y1="{}" x2="{px:.1}" y2="{}" stroke="#444"/><text x="{px:.1}" y="{}" text-anchor="middle">{}</text>"##,
                y0 + PANEL_H,
                y0 + PANEL_H + 5.0,
                y0 + PANEL_H + 18.0,
                label(x)
            );
            x += x_step;
        }
        if empty {
            let _ = writeln!(
                out,
                r##"<text x="{}" y="{}" text-anchor="middle" fill="#888">no samples</text>"##,
                LEFT + plot_w / 2.0,
                y0 + PANEL_H / 2.0
            );
        }
        for (j, s) in panel.series.iter().enumerate() {
            let color = PALETTE[j % PALETTE.len()];
            let pts: Vec<String> = s
                .points
                .iter()
                .filter(|(_, y)| y.is_finite() && (panel.scale == Scale::Linear || *y > 0.0))
                .map(|(x, y)| format!("{:.1},{:.1}", map_x(*x), map_y(*y)))
                .collect();
            if !pts.is_empty() {
                let _ = writeln!(
                    out,
                    r#"<polyline fill="none" stroke="{color}" stroke-width="1.5" points="{}"/>"#,
                    pts.join(" ")
                );
            }
            let ly = y0 + 14.0 + j as f64 * 18.0;
            let lx = LEFT + plot_w + 12.0;
            let _ = writeln!(
                out,
                r#"<line x1="{lx}" y1="{}" x2="{}" y2="{}" stroke="{color}" stroke-width="3"/><text x="{}" y="{ly}">{}</text>"#,
                ly - 4.0,
                lx + 20.0,
                ly - 4.0,
                lx + 26.0,
                escape(&s.name)
            );
        }
    }
    let _ = writeln!(
        out,
        r#"<text x="{}" y="{}" text-anchor="middle">seconds since start</text>"#,
        LEFT + plot_w / 2.0,
        height - 4.0
    );
    out.push_str("</svg>\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ticks_are_nice() {
        assert_eq!(nice_step(100.0, 5.0), 20.0);
        assert_eq!(nice_step(7.0, 10.0), 1.0);
        assert_eq!(nice_step(2_600.0, 5.0), 1_000.0);
        assert_eq!(label(2_500.0), "2.5k");
        assert_eq!(label(3_000_000.0), "3M");
        assert_eq!(label(0.5), "0.5");
    }

    #[test]
    fn log_panels_skip_non_positive_values_and_points_map_inside_the_frame() {
        let p = Panel {
            title: "latency <ms>".into(),
            unit: "ms".into(),
            scale: Scale::Log,
            series: vec![Series {
                name: "p99".into(),
                points: vec![(0.0, 0.0), (1.0, 10.0), (2.0, 1000.0)],
            }],
        };
        let doc = svg("t", &[p]);
        assert!(doc.contains("latency &lt;ms&gt;"));
        let line = doc.lines().find(|l| l.starts_with("<polyline")).unwrap();
        let pts = line
            .split("points=\"")
            .nth(1)
            .unwrap()
            .trim_end_matches("\"/>");
        // The zero is dropped; 10 sits on the bottom decade line, 1000 on the top one.
        let pts: Vec<(f64, f64)> = pts
            .split(' ')
            .map(|p| {
                let (x, y) = p.split_once(',').unwrap();
                (x.parse().unwrap(), y.parse().unwrap())
            })
            .collect();
        assert_eq!(pts.len(), 2);
        let y0 = TOP + 20.0;
        assert_eq!(pts[0].1, y0 + PANEL_H);
        assert_eq!(pts[1].1, y0);
    }
}
