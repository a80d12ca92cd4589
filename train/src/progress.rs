//! One line per epoch, for logs that are not a terminal (CI, `tee`, nohup).

use std::time::Instant;

use burn::train::logger::{EvaluationProgressLogger, TrainingProgressLogger};
use burn::train::metric::{MetricDefinition, MetricId};
use burn::train::renderer::{
    EvaluationName, MetricState, MetricsRenderer, MetricsRendererEvaluation, MetricsRendererTraining,
};

/// A burn-train renderer that prints each epoch's final metrics, by name, and its duration:
/// `epoch 3/10 (44 s) train: accuracy 98.48 %, loss 0.55, learning rate 2.79e-3 | valid: ...`.
pub struct EpochLines {
    /// Whether anything was held out: burn-train reports NaN for an empty validation split.
    validating: bool,
    total_epochs: usize,
    started: Instant,
    names: Vec<(MetricId, String)>,
    train: Vec<(MetricId, String)>,
    valid: Vec<(MetricId, String)>,
}

impl EpochLines {
    pub fn new(validating: bool) -> Self {
        Self {
            validating,
            total_epochs: 0,
            started: Instant::now(),
            names: Vec::new(),
            train: Vec::new(),
            valid: Vec::new(),
        }
    }

    fn record(into: &mut Vec<(MetricId, String)>, state: MetricState) {
        let entry = match state {
            MetricState::Generic(entry) | MetricState::Numeric(entry, _) => entry,
        };
        // burn formats a running metric as "epoch <mean so far> - batch <last batch>".
        let formatted = entry.serialized_entry.formatted;
        let text = formatted.split(" - batch").next().unwrap_or(&formatted).trim_start_matches("epoch ").to_string();
        match into.iter_mut().find(|(id, _)| *id == entry.metric_id) {
            Some((_, old)) => *old = text,
            None => into.push((entry.metric_id, text)),
        }
    }

    fn line(&self, metrics: &[(MetricId, String)]) -> String {
        let name = |id: &MetricId| self.names.iter().find(|(known, _)| known == id).map_or("?", |(_, n)| n.as_str());
        metrics.iter().map(|(id, value)| format!("{} {value}", name(id))).collect::<Vec<_>>().join(", ")
    }
}

impl MetricsRendererTraining for EpochLines {
    fn update_train(&mut self, state: MetricState) {
        Self::record(&mut self.train, state);
    }

    fn update_valid(&mut self, state: MetricState) {
        Self::record(&mut self.valid, state);
    }
}

impl MetricsRendererEvaluation for EpochLines {
    fn update_test(&mut self, _name: EvaluationName, _state: MetricState) {}
}

impl MetricsRenderer for EpochLines {
    fn manual_close(&mut self) {}

    fn register_metric(&mut self, definition: MetricDefinition) {
        self.names.push((definition.metric_id, definition.name.to_lowercase()));
    }
}

impl TrainingProgressLogger for EpochLines {
    fn start(&mut self, total_epochs: usize, _starting_epoch: usize, _items: Option<usize>, _label: Option<&str>) {
        self.total_epochs = total_epochs;
        self.started = Instant::now();
    }

    fn update_epoch(&mut self, epoch: usize) {
        let valid = if self.validating { format!(" | valid: {}", self.line(&self.valid)) } else { String::new() };
        println!(
            "epoch {epoch}/{} ({:.0} s) train: {}{valid}",
            self.total_epochs,
            self.started.elapsed().as_secs_f64(),
            self.line(&self.train),
        );
        self.started = Instant::now();
    }

    fn start_split(&mut self, _split: &str, _total_items: usize) {}
    fn update_split(&mut self, _items_processed: usize) {}
    fn end_split(&mut self) {}
    fn end(&mut self) {}
    fn log_event_training(&mut self, _event: String) {}
}

impl EvaluationProgressLogger for EpochLines {
    fn start_global_progress(&mut self, _total_tests: usize) {}
    fn start_test(&mut self, _name: &str, _total_items: usize) {}
    fn update_test_progress(&mut self, _items_processed: usize) {}
    fn end_test(&mut self) {}
    fn end_global_progress(&mut self) {}
    fn log_event_evaluation(&mut self, _event: String) {}
}
