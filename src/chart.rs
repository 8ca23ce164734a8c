//! `stats --plot`: the weekly counts as an SVG chart (plotters), messages per class above and
//! reports per topic below, one line per series, the weeks along the bottom.

use crate::stats::{CLASS_ORDER, Report};
use plotters::coord::Shift;
use plotters::prelude::*;
use std::path::Path;

const WIDTH: u32 = 1100;
const PANEL_HEIGHT: u32 = 380;

/// Writes the chart of `report` to `path` (SVG).
pub fn plot(report: &Report, path: &Path) -> Result<(), String> {
    let fail = |e: &dyn std::fmt::Display| format!("cannot draw {}: {e}", path.display());
    let root = SVGBackend::new(path, (WIDTH, 2 * PANEL_HEIGHT)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| fail(&e))?;
    let (upper, lower) = root.split_vertically(PANEL_HEIGHT);
    // The current week is not over: say so under its point.
    let weeks: Vec<String> = report
        .weeks
        .iter()
        .map(|w| if w.complete { w.week.clone() } else { format!("{} (so far)", w.week) })
        .collect();
    let about = if report.topic_filter.is_empty() {
        String::new()
    } else {
        format!(" about {}", report.topic_filter.join(" or "))
    };

    let classes: Vec<Series> = CLASS_ORDER
        .iter()
        .map(|c| {
            let name = c.as_str().to_string();
            let counts = report.weeks.iter().map(|w| w.classes.get(&name).copied().unwrap_or(0)).collect();
            Series { name, counts, frequent: false }
        })
        .filter(|s| s.counts.iter().any(|&n| n > 0))
        .collect();
    panel(&upper, &format!("Messages{about} per week, by class"), "messages", &weeks, &classes)
        .map_err(|e| fail(&e))?;

    let topics: Vec<Series> = report
        .weeks
        .first()
        .map(|w| w.topics.keys().cloned().collect::<Vec<_>>())
        .unwrap_or_default()
        .into_iter()
        .map(|t| {
            let counts = report.weeks.iter().map(|w| w.topics.get(&t).copied().unwrap_or(0)).collect();
            let frequent = report.frequent.iter().any(|f| f.topic == t);
            Series { name: t, counts, frequent }
        })
        .collect();
    let rule = &report.frequent_rule;
    let title = format!(
        "Reports per week, by topic (frequent: at least {} a week for {} complete weeks)",
        rule.min_per_week, rule.weeks
    );
    panel(&lower, &title, "reports", &weeks, &topics).map_err(|e| fail(&e))?;
    root.present().map_err(|e| fail(&e))
}

/// One line of a chart.
struct Series {
    name: String,
    counts: Vec<u64>,
    /// Named frequent in the legend.
    frequent: bool,
}

type DrawResult = Result<(), DrawingAreaErrorKind<<SVGBackend<'static> as DrawingBackend>::ErrorType>>;

/// One chart: a line per series over the weeks, with a legend; a note when there is no series.
fn panel(
    area: &DrawingArea<SVGBackend<'_>, Shift>,
    title: &str,
    y_desc: &str,
    weeks: &[String],
    series: &[Series],
) -> DrawResult {
    let n = weeks.len().max(1);
    let top = series.iter().flat_map(|s| s.counts.iter().copied()).max().unwrap_or(0);
    // Headroom above the highest point for the legend, and at least a scale of 0..5 so that
    // small counts are not drawn as a full-height chart.
    let y_max = (top + top / 2 + 1).max(5);
    let mut chart = ChartBuilder::on(area)
        .caption(title, ("sans-serif", 20))
        .margin(12)
        .x_label_area_size(36)
        .y_label_area_size(48)
        .build_cartesian_2d(-0.5f64..(n as f64 - 0.5), 0u64..y_max)?;
    let label = |x: &f64| {
        let i = x.round();
        if (x - i).abs() < 1e-6 && i >= 0.0 {
            weeks.get(i as usize).cloned().unwrap_or_default()
        } else {
            String::new()
        }
    };
    chart
        .configure_mesh()
        .x_labels(n.min(26))
        .x_label_formatter(&label)
        .y_desc(y_desc)
        .y_labels(6)
        .light_line_style(WHITE.mix(0.0))
        .draw()?;
    if series.is_empty() {
        let style = ("sans-serif", 16).into_font().color(&BLACK.mix(0.6));
        area.draw(&Text::new(
            "nothing in these weeks",
            (WIDTH as i32 / 2 - 90, PANEL_HEIGHT as i32 / 2),
            style,
        ))?;
        return Ok(());
    }
    for (i, s) in series.iter().enumerate() {
        let color = Palette99::pick(i).to_rgba();
        let points: Vec<(f64, u64)> = s.counts.iter().enumerate().map(|(x, &y)| (x as f64, y)).collect();
        let sum: u64 = s.counts.iter().sum();
        chart
            .draw_series(LineSeries::new(points.clone(), color.stroke_width(2)).point_size(3))?
            .label(if s.frequent {
                format!("{} ({sum}, frequent)", s.name)
            } else {
                format!("{} ({sum})", s.name)
            })
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], color.stroke_width(2)));
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK.mix(0.3))
        .draw()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::counts::Row;
    use crate::stats::{Options, day_of_date, parse_date, report};

    #[test]
    fn the_chart_is_an_svg_with_every_series_and_week() {
        let today = parse_date("2026-11-23").unwrap();
        let (first, last) = Options::last_weeks(today, 4);
        let opts = Options { first, last, topics: Vec::new(), frequent_min: 2, frequent_weeks: 2, today };
        let t = |s: &str| vec![s.to_string()];
        let at = |d: &str| u64::from(day_of_date(parse_date(d).unwrap())) * 86400;
        let rows = vec![
            (Row::new(at("2026-11-04"), "support", &t("wifi-realtek"), false, "queued"), 3),
            (Row::new(at("2026-11-17"), "whisperback", &[], true, ""), 2),
        ];
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("stats.svg");
        plot(&report(&rows, &opts), &path).unwrap();
        let svg = std::fs::read_to_string(&path).unwrap();
        assert!(svg.starts_with("<svg"), "{}", &svg[..100.min(svg.len())]);
        for text in ["support (3)", "whisperback (2)", "wifi-realtek (3)", "2026-W45", "2026-W48", "by topic"]
        {
            assert!(svg.contains(text), "{text} missing from the chart");
        }
        assert!(!svg.contains("spam ("), "a class never seen is left out of the legend");

        // No data: still a chart, saying so.
        plot(&report(&[], &opts), &path).unwrap();
        assert!(std::fs::read_to_string(&path).unwrap().contains("nothing in these weeks"));
        // An unwritable path is an error, not a panic.
        assert!(plot(&report(&[], &opts), &dir.path().join("no/such/dir.svg")).is_err());
    }
}
