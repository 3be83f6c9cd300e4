"""Evaluation: teacher-forced scoring, practical and lenient accuracy, fluency, per-record and summary
output."""
from massedit.evaluation.counterfact import build_items, evaluate_records, known_mask
from massedit.evaluation.fluency import generate_greedy, text_entropy, word_tokenize
from massedit.evaluation.scoring import TargetScore, next_token_argmax, score_targets

__all__ = [
    "TargetScore",
    "build_items",
    "evaluate_records",
    "generate_greedy",
    "known_mask",
    "next_token_argmax",
    "score_targets",
    "text_entropy",
    "word_tokenize",
]
