"""The study's published "anti-repeat" prompt form (data/01_raw/published/SOURCE.md): " {A} met {B}. {A}
talked to" -> " {B}", correct B, distractor A, names from the published list.

Measured as published so that the published numbers can be reproduced, and named for what it is: both
candidates are names already in the prompt, so it is a name-choice task of the IOI kind, not the list
task design.md defines as anti-repetition (the audit of the published tables says so from the form
itself, :func:`ioi_anti.analysis.published.classify_task`). Prompts, reference and pool as in
:func:`ioi_anti.tasks.paper_ioi.name_choice_prompts`.
"""

from __future__ import annotations

from ioi_anti.tasks import Task
from ioi_anti.tasks.paper_ioi import NameChoiceSettings, name_choice_prompts

TASK = Task(name="paper_anti", label="published anti-repeat", short="anti", colour="#D55E00",
            make_prompts=name_choice_prompts, settings=NameChoiceSettings, ablation_roles=("ref", "pool"),
            description="the published anti-repeat form 'A met B. A talked to': logit(B) − logit(A), a "
                        "name choice; reference: a third name for the second A")
