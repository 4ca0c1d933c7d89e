"""The synthetic copy and retrieval tasks of Griffin section 6.2 (De, Smith et al. 2024, Appendix H).

    selective_copy_batch   selective copying (Gu and Dao 2023): data tokens scattered among noise, to be
                           copied in order after a marker                            (tasks/selective_copy.py)
    induction_batch        induction heads (Fu, Dao et al. 2023): recall the token that followed the one
                           earlier occurrence of a special token                     (tasks/induction.py)
    phonebook_batch        phonebook lookup (Jelassi et al. 2024) at small scale: a book of random
                           "name:number" lines, two worked examples, a query name    (tasks/phonebook.py)
    token_accuracy, exact_match, exact_match_accuracy
                           answer accuracy from logits under teacher forcing         (tasks/common.py)

Every generator takes a numpy.random.Generator and returns a minigriffin.data.Batch of (B, T) next-token
arrays whose mask scores exactly the answer tokens, so the trainer's masked loss trains on the answers alone.
Layouts, defaults and the paper's numbers: docs/tasks.md.
"""

from minigriffin.tasks.common import exact_match, exact_match_accuracy, row_token_accuracy, token_accuracy
from minigriffin.tasks.induction import GRIFFIN_INDUCTION, induction_batch, special_token
from minigriffin.tasks.phonebook import (
    PHONEBOOK_PAD,
    PHONEBOOK_VOCAB,
    decode,
    encode,
    line_length,
    phonebook_batch,
    phonebook_length,
)
from minigriffin.tasks.selective_copy import (
    GRIFFIN_SELECTIVE_COPY,
    copy_marker,
    noise_token,
    selective_copy_batch,
)

__all__ = [
    "GRIFFIN_INDUCTION",
    "GRIFFIN_SELECTIVE_COPY",
    "PHONEBOOK_PAD",
    "PHONEBOOK_VOCAB",
    "copy_marker",
    "decode",
    "encode",
    "exact_match",
    "exact_match_accuracy",
    "induction_batch",
    "line_length",
    "noise_token",
    "phonebook_batch",
    "phonebook_length",
    "row_token_accuracy",
    "selective_copy_batch",
    "special_token",
    "token_accuracy",
]
