"""Evaluation: teacher-forced scoring, practical and lenient accuracy, fluency, per-record and summary
output; ZsRE, Wiki-recent, TF-IDF consistency and the general-ability tasks."""
from massedit.evaluation.consistency import evaluate_consistency
from massedit.evaluation.counterfact import build_items, evaluate_records, known_mask
from massedit.evaluation.fluency import generate_greedy, text_entropy, word_tokenize
from massedit.evaluation.general import evaluate_general, f1_weighted, matthews_corrcoef
from massedit.evaluation.scoring import TargetScore, next_token_argmax, score_targets
from massedit.evaluation.wikirecent import evaluate_wikirecent
from massedit.evaluation.zsre import evaluate_zsre

__all__ = [
    "TargetScore",
    "build_items",
    "evaluate_consistency",
    "evaluate_general",
    "evaluate_records",
    "evaluate_wikirecent",
    "evaluate_zsre",
    "f1_weighted",
    "generate_greedy",
    "known_mask",
    "matthews_corrcoef",
    "next_token_argmax",
    "score_targets",
    "text_entropy",
    "word_tokenize",
]
