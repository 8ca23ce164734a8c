//! `stats --plot`: an SVG chart (plotters) that a Help Desk member reads at a glance. Above, the
//! people (or messages) about each topic per week: the frequent topics in strong colours, named
//! first in the legend, the others faint, and the frequent threshold as a dashed line. Below, the
//! people per class (about a topic: its WhisperBack reports and private requests). The week still
//! running is shaded: its counts are so far.

use super::{CLASS_ORDER, Count, Report, WeekCounts, counted, trim_number};
use plotters::coord::Shift;
use plotters::coord::ranged1d::SegmentedCoord;
use plotters::coord::types::{RangedCoordu32, RangedCoordu64};
use plotters::prelude::*;
use std::collections::BTreeMap;
use std::path::Path;

const WIDTH: u32 = 1200;
const LEGEND_WIDTH: u32 = 330;
const TOPIC_HEIGHT: u32 = 480;
const CLASS_HEIGHT: u32 = 300;
/// Strong colours for the frequent topics.
const STRONG: [RGBColor; 8] = [
    RGBColor(214, 39, 40),
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(0, 128, 128),
    RGBColor(200, 0, 120),
];
/// Muted colours for the other topics and the classes, none close to a strong one.
const FAINT: [RGBColor; 6] = [
    RGBColor(150, 150, 150),
    RGBColor(188, 189, 34),
    RGBColor(23, 190, 207),
    RGBColor(227, 119, 194),
    RGBColor(150, 150, 210),
    RGBColor(120, 180, 120),
];
const THRESHOLD: RGBColor = RGBColor(50, 50, 50);
/// Legend lines longer than this are cut: a topic id may have 64 characters.
const LEGEND_CHARS: usize = 42;

/// One line of a chart and its legend entry (a name, and a line of details).
struct Series {
    name: String,
    details: String,
    counts: Vec<u64>,
    color: RGBColor,
    strong: bool,
}

/// Writes the chart of `report` to `path` (SVG).
pub fn plot(report: &Report, path: &Path) -> Result<(), String> {
    let fail = |e: &dyn std::fmt::Display| format!("cannot draw {}: {e}", path.display());
    let root = SVGBackend::new(path, (WIDTH, TOPIC_HEIGHT + CLASS_HEIGHT)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| fail(&e))?;
    let (upper, lower) = root.split_vertically(TOPIC_HEIGHT);
    let weeks: Vec<String> = report.weeks.iter().map(|w| w.week.clone()).collect();
    let running = report.weeks.iter().position(|w| !w.complete);
    let people = report.count == Count::People;
    let unit = if people { "people" } else { "messages" };
    let note = if people {
        format!("a person once a week, until {}", report.today)
    } else {
        format!("counted until {}", report.today)
    };
    let panel = Panel { weeks: &weeks, running, unit, note: &note };
    let rule = &report.frequent_rule;
    let threshold = Threshold {
        at: u64::from(rule.min_per_week),
        details: format!(
            "{} a week, {} complete weeks running",
            counted(u64::from(rule.min_per_week), if people { "person" } else { "message" }, unit),
            rule.weeks
        ),
    };
    let (upper_title, lower_title) = titles(report);
    panel.draw(&upper, &upper_title, &topic_series(report), Some(&threshold)).map_err(|e| fail(&e))?;
    panel.draw(&lower, &lower_title, &class_series(report), None).map_err(|e| fail(&e))?;
    root.present().map_err(|e| fail(&e))
}

/// The titles of the topic chart and of the class chart.
fn titles(report: &Report) -> (String, String) {
    let topics = report.topic_filter.join(" or ");
    match (report.count, topics.is_empty()) {
        (Count::People, true) => {
            ("People writing about each topic, per week".into(), "People writing, per week and class".into())
        }
        (Count::People, false) => (
            format!("People writing about {topics}, per week"),
            format!("People writing about {topics}: WhisperBack reports and private requests"),
        ),
        (Count::Messages, true) => {
            ("Messages about each topic, per week".into(), "Messages per week and class".into())
        }
        (Count::Messages, false) => (
            format!("Messages about {topics}, per week"),
            format!("Messages about {topics}, per week and class"),
        ),
    }
}

/// The topics: frequent ones first (strong, as the frequent list orders them), then the others
/// (faint), most counted first.
fn topic_series(report: &Report) -> Vec<Series> {
    let count = |w: &WeekCounts, t: &str| {
        let map = if report.count == Count::People { &w.people.topics } else { &w.topics };
        map.get(t).copied().unwrap_or(0)
    };
    let topics: Vec<String> =
        report.weeks.first().map(|w| w.topics.keys().cloned().collect()).unwrap_or_default();
    let counts: BTreeMap<&str, Vec<u64>> =
        topics.iter().map(|t| (t.as_str(), report.weeks.iter().map(|w| count(w, t)).collect())).collect();
    let mut out: Vec<Series> = Vec::new();
    for (i, f) in report.frequent.iter().filter(|f| counts.contains_key(f.topic.as_str())).enumerate() {
        out.push(Series {
            name: format!("{} (frequent)", f.topic),
            details: format!("about {} a week since {}", trim_number(f.weekly_average), f.since),
            counts: counts[f.topic.as_str()].clone(),
            color: STRONG[i % STRONG.len()],
            strong: true,
        });
    }
    let mut others: Vec<(&str, &Vec<u64>)> = counts
        .iter()
        .filter(|(t, _)| !report.frequent.iter().any(|f| f.topic == **t))
        .map(|(t, c)| (*t, c))
        .collect();
    others.sort_by_key(|(t, c)| (std::cmp::Reverse(c.iter().sum::<u64>()), *t));
    for (i, (t, c)) in others.into_iter().enumerate() {
        out.push(faint(i, t, c.clone()));
    }
    out
}

/// A series drawn faint, its sum in the legend.
fn faint(i: usize, name: &str, counts: Vec<u64>) -> Series {
    let details = format!("{} in these weeks", counts.iter().sum::<u64>());
    Series { name: name.into(), details, counts, color: FAINT[i % FAINT.len()], strong: false }
}

/// The classes that have a count (or, for people about topics, the tagged reports and the
/// private requests).
fn class_series(report: &Report) -> Vec<Series> {
    let series: Vec<Series> = if report.count == Count::People && !report.topic_filter.is_empty() {
        let tagged: Vec<u64> = report.weeks.iter().map(|w| w.people.tagged_reports.values().sum()).collect();
        let private =
            report.weeks.iter().zip(&tagged).map(|(w, t)| w.people.total.saturating_sub(*t)).collect();
        vec![faint(2, "WhisperBack reports", tagged), faint(3, "private requests", private)]
    } else {
        CLASS_ORDER
            .iter()
            .enumerate()
            .map(|(i, c)| {
                let get = |w: &WeekCounts| {
                    let map = if report.count == Count::People { &w.people.classes } else { &w.classes };
                    map.get(c.as_str()).copied().unwrap_or(0)
                };
                faint(i, c.as_str(), report.weeks.iter().map(get).collect())
            })
            .collect()
    };
    series.into_iter().filter(|s| s.counts.iter().any(|&n| n > 0)).collect()
}

struct Threshold {
    at: u64,
    details: String,
}

/// What both charts share: the weeks, the running one, the unit, a note on what is counted.
struct Panel<'a> {
    weeks: &'a [String],
    running: Option<usize>,
    unit: &'a str,
    note: &'a str,
}

type DrawResult = Result<(), DrawingAreaErrorKind<<SVGBackend<'static> as DrawingBackend>::ErrorType>>;
type Chart<'a, 'b> =
    ChartContext<'a, SVGBackend<'b>, Cartesian2d<SegmentedCoord<RangedCoordu32>, RangedCoordu64>>;

impl Panel<'_> {
    /// One chart: a line per series over the weeks, the legend on the right, a note when there is
    /// no series.
    fn draw(
        &self,
        area: &DrawingArea<SVGBackend<'_>, Shift>,
        title: &str,
        series: &[Series],
        threshold: Option<&Threshold>,
    ) -> DrawResult {
        let (plot_area, legend_area) = area.split_horizontally(WIDTH - LEGEND_WIDTH);
        let last = u32::try_from(self.weeks.len().max(1) - 1).unwrap_or(u32::MAX);
        let top = series.iter().flat_map(|s| s.counts.iter().copied()).max().unwrap_or(0);
        let top = top.max(threshold.map_or(0, |t| t.at));
        // Room above the highest point, and a scale of at least 0..5: small counts are not drawn
        // as a full-height chart.
        let y_max = (top + top / 5 + 1).max(5);
        let mut chart = ChartBuilder::on(&plot_area)
            .caption(title, ("sans-serif", 22))
            .margin(14)
            .x_label_area_size(34)
            .y_label_area_size(52)
            .build_cartesian_2d((0..last).into_segmented(), 0u64..y_max)?;
        self.mesh(&mut chart)?;
        if let Some(i) = self.running {
            let i = u32::try_from(i).unwrap_or(u32::MAX);
            let band = [(SegmentValue::Exact(i), y_max), (SegmentValue::Exact(i + 1), 0)];
            chart.draw_series([Rectangle::new(band, BLACK.mix(0.07).filled())])?;
            let style = ("sans-serif", 13).into_font().color(&BLACK.mix(0.6));
            chart.draw_series([Text::new("not over yet", (SegmentValue::Exact(i), y_max), style)])?;
        }
        if let Some(t) = threshold {
            let line = [(SegmentValue::Exact(0), t.at), (SegmentValue::Exact(last + 1), t.at)];
            chart.draw_series(DashedLineSeries::new(line, 8, 5, THRESHOLD.stroke_width(2)))?;
        }
        if series.is_empty() {
            let style = ("sans-serif", 16).into_font().color(&BLACK.mix(0.6));
            plot_area.draw(&Text::new("nothing in these weeks", (260, TOPIC_HEIGHT as i32 / 3), style))?;
        }
        // Faint lines first, so that the strong ones are drawn over them.
        for s in series.iter().rev() {
            let points = s.counts.iter().enumerate().map(|(x, &y)| (SegmentValue::CenterOf(x as u32), y));
            let (width, size) = if s.strong { (4, 5) } else { (2, 3) };
            chart.draw_series(LineSeries::new(points.clone(), s.color.stroke_width(width)))?;
            chart.draw_series(points.map(|p| Circle::new(p, size, s.color.filled())))?;
        }
        legend(&legend_area, self.note, series, threshold)
    }

    /// The axes: every week labelled when they fit, else every second or more, the last always.
    fn mesh(&self, chart: &mut Chart<'_, '_>) -> DrawResult {
        let step = (self.weeks.len() / 10).max(1);
        let label = |v: &SegmentValue<u32>| match v {
            SegmentValue::CenterOf(i) => {
                let i = *i as usize;
                // Counted back from the last week, which is always labelled.
                let last = self.weeks.len().saturating_sub(1);
                let shown = (last - i.min(last)).is_multiple_of(step);
                if shown { self.weeks.get(i).cloned().unwrap_or_default() } else { String::new() }
            }
            _ => String::new(),
        };
        chart
            .configure_mesh()
            .disable_x_mesh()
            .x_labels(self.weeks.len())
            .x_label_formatter(&label)
            .x_label_style(("sans-serif", 13))
            .y_desc(self.unit)
            .y_labels(6)
            .y_label_style(("sans-serif", 13))
            .light_line_style(WHITE.mix(0.0))
            .bold_line_style(BLACK.mix(0.08))
            .draw()
    }
}

/// At most `LEGEND_CHARS` characters.
fn cut(s: &str) -> String {
    if s.chars().count() <= LEGEND_CHARS {
        return s.to_string();
    }
    s.chars().take(LEGEND_CHARS - 1).chain(['…']).collect()
}

/// The legend beside the chart: what is counted, the threshold, then each series (a name and a
/// line of details), as many as fit.
fn legend(
    area: &DrawingArea<SVGBackend<'_>, Shift>,
    note: &str,
    series: &[Series],
    threshold: Option<&Threshold>,
) -> DrawResult {
    let (_, height) = area.dim_in_pixel();
    let grey = BLACK.mix(0.6);
    let name = |strong: bool| {
        let f = ("sans-serif", 15).into_font();
        if strong { f.style(FontStyle::Bold) } else { f }
    };
    let details = ("sans-serif", 13).into_font();
    area.draw(&Text::new(cut(note), (4, 18), details.color(&grey)))?;
    let mut y = 58;
    if let Some(t) = threshold {
        area.draw(&PathElement::new([(4, y), (14, y)], THRESHOLD.stroke_width(2)))?;
        area.draw(&PathElement::new([(20, y), (30, y)], THRESHOLD.stroke_width(2)))?;
        area.draw(&Text::new("frequent threshold", (40, y - 9), name(false).color(&THRESHOLD)))?;
        area.draw(&Text::new(cut(&t.details), (40, y + 9), details.color(&grey)))?;
        y += 44;
    }
    for (i, s) in series.iter().enumerate() {
        if y + 40 > height as i32 {
            let more = format!("and {} more", series.len() - i);
            area.draw(&Text::new(more, (40, y - 9), details.color(&grey)))?;
            break;
        }
        let width = if s.strong { 4 } else { 2 };
        area.draw(&PathElement::new([(4, y), (30, y)], s.color.stroke_width(width)))?;
        area.draw(&Text::new(cut(&s.name), (40, y - 9), name(s.strong).color(&BLACK)))?;
        area.draw(&Text::new(cut(&s.details), (40, y + 9), details.color(&grey)))?;
        y += 44;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stats::test_data::{Counts, d};
    use crate::stats::{Options, ReplyTopics, report};

    #[test]
    fn the_chart_is_an_svg_with_every_series_week_and_the_threshold() {
        let opts = Options::new(d("2026-11-23"), 4);
        let c = Counts::default()
            .requests("2026-11-04", "wifi-realtek", 3, 5)
            .requests("2026-11-10", "wifi-realtek", 2, 2)
            .requests("2026-11-17", "wifi-realtek", 2, 2)
            .requests("2026-11-17", "mac", 1, 1)
            .report("r1", "2026-11-18");
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("stats.svg");
        let file = ReplyTopics::default();
        plot(&report(&c.0, &opts, Ok(&file)), &path).unwrap();
        let svg = std::fs::read_to_string(&path).unwrap();
        assert!(svg.starts_with("<svg"), "{}", &svg[..100.min(svg.len())]);
        for text in [
            "People writing about each topic, per week",
            "wifi-realtek (frequent)",
            "about 2.3 a week since 2026-W45",
            "mac",
            "1 in these weeks",
            "support",
            "8 in these weeks",
            "frequent threshold",
            "2 people a week, 2 complete weeks running",
            "2026-W45",
            "2026-W48",
            "not over yet",
        ] {
            assert!(svg.contains(text), "{text} missing from the chart");
        }
        assert!(!svg.contains(">spam<"), "a class never seen is left out of the legend");
        let messages = Options { count: Count::Messages, ..opts.clone() };
        plot(&report(&c.0, &messages, Ok(&file)), &path).unwrap();
        let svg = std::fs::read_to_string(&path).unwrap();
        assert!(svg.contains("Messages about each topic, per week") && svg.contains("10 in these weeks"));

        // No data: still a chart, saying so.
        plot(&report(&Default::default(), &opts, Ok(&file)), &path).unwrap();
        assert!(std::fs::read_to_string(&path).unwrap().contains("nothing in these weeks"));
        // An unwritable path is an error, not a panic.
        assert!(
            plot(&report(&Default::default(), &opts, Ok(&file)), &dir.path().join("no/such/dir.svg"))
                .is_err()
        );
    }
}
