"""Steps wait out an unreachable service instead of failing the month.

`waits_out_outages` turns an outage error (`core.outages.is_outage`: a database or the MLflow server
that cannot be reached) into a Dagster retry of the step (`RetryRequested`) after 5 s, then twice as
long each time up to 5 minutes, until ML_ASSETS_OUTAGE_SECONDS have been waited: the month is done
once the service is back, without an operator. Only then does the step fail, with the service's own
error. Any other error fails the step at once: Dagster's RetryPolicy cannot tell them apart, it
retries every exception.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable

from dagster import RetryRequested

from ml_assets import settings
from ml_assets.core import credentials
from ml_assets.core.outages import is_outage, retry_delays


def waits_out_outages(compute: Callable) -> Callable:
    """A step's compute function (its context first) whose outage errors retry the step after a delay."""

    @functools.wraps(compute)
    def step(context, *args, **kwargs):
        try:
            return compute(context, *args, **kwargs)
        except Exception as error:
            delays = retry_delays(settings.OUTAGE_SECONDS.value())
            attempt = context.op_execution_context.retry_number
            if attempt >= len(delays) or not is_outage(error):
                raise
            said = credentials.said(error)
            warning = f"a service is unreachable ({said}); retry {attempt + 1} of {len(delays)} in {delays[attempt]} s"
            try:
                context.log.warning(warning)
            except Exception as unlogged:
                # The event log's database may be the service that is down: Dagster then raises from the
                # log call, and the step would fail instead of waiting it out.
                if not is_outage(unlogged):
                    raise
                logging.getLogger(__name__).warning(warning)
            raise RetryRequested(max_retries=len(delays), seconds_to_wait=delays[attempt]) from error

    return step
