//! The scaling plot: rates and server CPU per message as the work grows
//! (W1 and W2 against the number of sender connections, W6 against the
//! number of queued messages), drawn as an SVG from the bench's own JSON
//! rows. Text is laid out with plotters' built-in estimate, so no system
//! fonts are needed to draw it.

use std::path::Path;

use anyhow::{Context, Result, anyhow};
use plotters::prelude::*;
use serde_json::Value;

/// The rows in a file of `--json` lines (other lines are passed over).
pub fn read_rows(path: &Path) -> Result<Vec<Value>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    Ok(text
        .lines()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .filter(|v| v.get("workload").is_some())
        .collect())
}

/// One curve: its label, colour and (x, y) points in x order.
struct Curve {
    label: &'static str,
    colour: RGBColor,
    points: Vec<(f64, f64)>,
}

/// What one panel shows.
struct Panel<'a> {
    title: &'a str,
    x_desc: &'a str,
    y_desc: &'a str,
    curves: Vec<Curve>,
}

/// Which figure of a row a panel plots.
#[derive(Clone, Copy)]
enum Figure {
    Rate,
    CpuPerMessage,
}

impl Figure {
    fn of(self, row: &Value) -> Option<f64> {
        let key = match self {
            Figure::Rate => "rate_per_s",
            Figure::CpuPerMessage => "server_cpu_us_per_msg",
        };
        row.get(key).and_then(Value::as_f64)
    }
}

/// The x value of a row for its workload: sender connections for W1,
/// recipient connections for W2 (one per sender), queued messages for W6.
fn x_of(row: &Value) -> Option<(&str, f64)> {
    let workload = row.get("workload")?.as_str()?;
    let key = match workload {
        "W1" => "senders",
        "W2" => "recipients",
        "W6" => "queued_before",
        _ => return None,
    };
    Some((workload, row.get(key)?.as_f64()?))
}

/// The points of `workload`'s `figure`, the median where one x was
/// measured more than once.
fn points(rows: &[Value], workload: &str, figure: Figure) -> Vec<(f64, f64)> {
    let mut by_x: Vec<(f64, Vec<f64>)> = Vec::new();
    for row in rows {
        let Some((w, x)) = x_of(row) else { continue };
        let Some(y) = figure.of(row) else { continue };
        if w != workload || x <= 0.0 {
            continue;
        }
        match by_x.iter_mut().find(|(seen, _)| *seen == x) {
            Some((_, ys)) => ys.push(y),
            None => by_x.push((x, vec![y])),
        }
    }
    by_x.sort_by(|a, b| a.0.total_cmp(&b.0));
    by_x.into_iter().map(|(x, ys)| (x, median(ys))).collect()
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

const W1_COLOUR: RGBColor = RGBColor(31, 119, 180);
const W2_COLOUR: RGBColor = RGBColor(255, 127, 14);
const W6_COLOUR: RGBColor = RGBColor(44, 160, 44);

fn connection_curves(rows: &[Value], figure: Figure) -> Vec<Curve> {
    vec![
        Curve {
            label: "W1 offline store",
            colour: W1_COLOUR,
            points: points(rows, "W1", figure),
        },
        Curve {
            label: "W2 drain",
            colour: W2_COLOUR,
            points: points(rows, "W2", figure),
        },
    ]
}

fn queue_curves(rows: &[Value], figure: Figure) -> Vec<Curve> {
    vec![Curve {
        label: "W6 store with the queue already holding x",
        colour: W6_COLOUR,
        points: points(rows, "W6", figure),
    }]
}

/// Draws the four panels (rates above, CPU per message below; sender
/// connections left, queued messages right) from the bench's JSON rows
/// into an SVG at `out`. Fails if no row has anything to plot.
pub fn draw(rows: &[Value], out: &Path) -> Result<()> {
    let panels = [
        Panel {
            title: "W1 and W2: messages/s",
            x_desc: "sender (and recipient) connections",
            y_desc: "messages/s",
            curves: connection_curves(rows, Figure::Rate),
        },
        Panel {
            title: "W6: messages/s stored",
            x_desc: "messages already queued",
            y_desc: "messages/s",
            curves: queue_curves(rows, Figure::Rate),
        },
        Panel {
            title: "W1 and W2: server CPU per message",
            x_desc: "sender (and recipient) connections",
            y_desc: "µs of CPU per message",
            curves: connection_curves(rows, Figure::CpuPerMessage),
        },
        Panel {
            title: "W6: server CPU per message",
            x_desc: "messages already queued",
            y_desc: "µs of CPU per message",
            curves: queue_curves(rows, Figure::CpuPerMessage),
        },
    ];
    if panels
        .iter()
        .all(|p| p.curves.iter().all(|c| c.points.is_empty()))
    {
        return Err(anyhow!("no W1, W2 or W6 rows to plot"));
    }
    let root = SVGBackend::new(out, (1100, 760)).into_drawing_area();
    root.fill(&WHITE).map_err(plot_error)?;
    for (area, panel) in root.split_evenly((2, 2)).iter().zip(&panels) {
        draw_panel(area, panel)?;
    }
    root.present().map_err(plot_error)?;
    Ok(())
}

fn draw_panel<DB: DrawingBackend>(
    area: &DrawingArea<DB, plotters::coord::Shift>,
    panel: &Panel,
) -> Result<()>
where
    DB::ErrorType: 'static,
{
    let all: Vec<(f64, f64)> = panel.curves.iter().flat_map(|c| c.points.clone()).collect();
    if all.is_empty() {
        return Ok(());
    }
    let x_min = all.iter().map(|p| p.0).fold(f64::INFINITY, f64::min);
    let x_max = all.iter().map(|p| p.0).fold(0.0, f64::max);
    let y_max = all.iter().map(|p| p.1).fold(0.0, f64::max);
    // A decade of room either side of a lone point, a tenth above the top.
    let (x_lo, x_hi) = if x_max > x_min {
        (x_min / 1.5, x_max * 1.5)
    } else {
        (x_min / 10.0, x_max * 10.0)
    };
    let mut chart = ChartBuilder::on(area)
        .caption(panel.title, ("sans-serif", 18))
        .margin(12)
        .x_label_area_size(42)
        .y_label_area_size(70)
        .build_cartesian_2d((x_lo..x_hi).log_scale(), 0.0..(y_max * 1.15).max(1.0))
        .map_err(plot_error)?;
    chart
        .configure_mesh()
        .x_desc(panel.x_desc)
        .y_desc(panel.y_desc)
        .x_label_formatter(&|x| short_number(*x))
        .y_label_formatter(&|y| short_number(*y))
        .draw()
        .map_err(plot_error)?;
    for curve in panel.curves.iter().filter(|c| !c.points.is_empty()) {
        let colour = curve.colour;
        chart
            .draw_series(LineSeries::new(
                curve.points.clone(),
                colour.stroke_width(2),
            ))
            .map_err(plot_error)?
            .label(curve.label)
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 18, y)], colour.stroke_width(2))
            });
        chart
            .draw_series(
                curve
                    .points
                    .iter()
                    .map(|&p| Circle::new(p, 4, colour.filled())),
            )
            .map_err(plot_error)?;
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::LowerLeft)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()
        .map_err(plot_error)?;
    Ok(())
}

/// 1,000 as "1k", 5,000,000 as "5M": axis labels stay short.
fn short_number(x: f64) -> String {
    let (value, unit) = if x >= 1e6 {
        (x / 1e6, "M")
    } else if x >= 1e3 {
        (x / 1e3, "k")
    } else {
        (x, "")
    };
    if (value - value.round()).abs() < 0.05 {
        format!("{:.0}{unit}", value)
    } else {
        format!("{value:.1}{unit}")
    }
}

fn plot_error<E: std::error::Error + Send + Sync>(e: DrawingAreaErrorKind<E>) -> anyhow::Error {
    anyhow!("cannot draw the plot: {e}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(workload: &str, key: &str, x: u64, rate: f64, cpu: f64) -> Value {
        serde_json::json!({
            "workload": workload,
            key: x,
            "rate_per_s": rate,
            "server_cpu_us_per_msg": cpu,
        })
    }

    #[test]
    fn points_are_medians_in_x_order() {
        let rows = vec![
            row("W1", "senders", 100, 30.0, 1.0),
            row("W1", "senders", 10, 20.0, 1.0),
            row("W1", "senders", 10, 40.0, 1.0),
            row("W1", "senders", 10, 10.0, 1.0),
            row("W2", "recipients", 10, 99.0, 1.0),
        ];
        assert_eq!(
            points(&rows, "W1", Figure::Rate),
            vec![(10.0, 20.0), (100.0, 30.0)]
        );
    }

    #[test]
    fn draws_an_svg_with_every_curve() {
        let rows = vec![
            row("W1", "senders", 1, 5000.0, 80.0),
            row("W1", "senders", 1000, 20000.0, 40.0),
            row("W2", "recipients", 1, 9000.0, 30.0),
            row("W6", "queued_before", 10_000, 15000.0, 45.0),
            row("W6", "queued_before", 1_000_000, 14000.0, 47.0),
        ];
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("scaling.svg");
        draw(&rows, &out).unwrap();
        let svg = std::fs::read_to_string(&out).unwrap();
        assert!(svg.starts_with("<svg"));
        for label in ["W1 offline store", "W2 drain", "W6 store", "1M"] {
            assert!(svg.contains(label), "{label} missing");
        }
    }

    #[test]
    fn nothing_to_plot_is_an_error() {
        let rows = vec![row("W3", "pairs", 10, 200.0, 900.0)];
        let dir = tempfile::tempdir().unwrap();
        assert!(draw(&rows, &dir.path().join("x.svg")).is_err());
    }
}
