"""`distill-saved`: a spec kept in a file, run with a few fields changed (the short deployment form).

Users who keep their specs in files get a form with two fields instead of the whole spec: where
the spec is (a YAML path on the worker's machine, or a file:// or s3:// URI in the artifact
store) and the handful of knobs changed per run (stratos.overrides.SpecOverrides: name, budget,
accuracy and latency limits, training size and epochs, serving on or off). The overrides are
applied and the result validated as a whole, exactly as if the file had said so; the run is the
`distill` flow on it, as a subflow.
"""

from __future__ import annotations

from pathlib import Path

from prefect import flow
from prefect.states import State
from pydantic import ValidationError

from flows.checks import fail, first_check, one_line, preflight_done
from flows.distill import DistillResult, distill
from stratos.overrides import SpecOverrides
from stratos.spec import SpecError, load_spec
from stratos.storage import StorageError, fetch


@flow(name="distill-saved", persist_result=True, validate_parameters=False)  # checked below
def distill_saved(spec_path: str, overrides: SpecOverrides | None = None) -> DistillResult:
    """Run the saved spec at `spec_path` (a path on the worker, or a URI) with `overrides` applied."""
    try:
        changes = SpecOverrides.model_validate(overrides or {})
        local = fetch(spec_path) if "://" in spec_path else Path(spec_path)
        spec = changes.apply(load_spec(local))
    except ValidationError as err:
        return fail(f"overrides: {one_line(err)}")  # type: ignore[return-value]
    except (SpecError, StorageError) as err:
        return fail(f"spec_path '{spec_path}': {err}")  # type: ignore[return-value]
    checked = first_check(spec)
    if isinstance(checked, State):
        return checked  # type: ignore[return-value]
    with preflight_done():
        return distill(checked)
