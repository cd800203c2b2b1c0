"""Each PySpark private spark_tracking touches (spark_tracking/_compat/pyspark.py), checked
against the installed PySpark, in a fresh interpreter (the wrappers are process-wide)."""

import subprocess
import sys
import textwrap

import pyspark


def run(code: str) -> str:
    out = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-3000:]
    return out.stdout.strip()


def test_the_task_context_is_read_and_its_set_and_reset_are_seen():
    out = run("""
        from pyspark.taskcontext import BarrierTaskContext, TaskContext
        from spark_tracking._compat import pyspark as compat
        seen = []
        assert compat.wrap_set_task_context(lambda ctx: seen.append(("start", type(ctx).__name__)),
                                            lambda: seen.append(("end",)))
        assert compat.wrap_set_task_context(lambda ctx: None, lambda: None)  # idempotent
        read = compat.task_context_reader()
        ctx = object.__new__(BarrierTaskContext)
        TaskContext._setTaskContext(ctx)
        assert read() is ctx and compat.is_barrier(ctx) and compat.current_task_context() is ctx
        TaskContext._setTaskContext(None)
        assert read() is None
        print(seen, compat.stage_attempt_number(ctx))
    """)
    assert out == "[('start', 'BarrierTaskContext'), ('end',)] 0"


def test_the_worker_steps_it_wraps_exist_in_this_pyspark():
    out = run("""
        import pyspark.worker
        from spark_tracking._compat import pyspark as compat
        print(sorted(compat.wrap_worker_entry(lambda: None, lambda: None)))
    """)
    wrapped = eval(out)
    assert {"read_command", "read_udfs", "main"} <= set(wrapped), (pyspark.__version__, wrapped)
    if pyspark.__version__ >= "4":
        assert "handle_worker_exception" in wrapped


def test_outside_pyspark_nothing_is_imported_or_wrapped():
    out = run("""
        import sys
        from spark_tracking._compat import pyspark as compat
        print(compat.task_context_reader(), compat.wrap_worker_entry(lambda: None, lambda: None),
              compat.hook_forked_workers(lambda: None), "pyspark" in sys.modules)
    """)
    assert out == "None [] False False"


def test_the_active_spark_context_is_found_without_starting_spark(spark):
    from spark_tracking._compat import pyspark as compat

    assert compat.active_spark_context() is spark.sparkContext
    out = run("""
        import sys
        from spark_tracking._compat import pyspark as compat
        print(compat.active_spark_context(), "pyspark" in sys.modules)
    """)
    assert out == "None False"


def test_a_pyspark_that_renamed_the_task_context_attribute_still_logs():
    # a later PySpark renaming the private TaskContext._taskContext must not make log calls raise
    out = run("""
        import os
        os.environ.update({"SPARK_TRACKING_RELAY": "127.0.0.1:9", "SPARK_TRACKING_RELAY_SECRET": "s",
                           "SPARK_TRACKING_BINDING": "1:0", "SPARK_TRACKING_WORKER": "0:0:0:0",
                           "SPARK_TRACKING_SHIP_INTERVAL": "3600"})
        from pyspark.taskcontext import TaskContext
        del TaskContext._taskContext
        TaskContext._renamed = None
        TaskContext.get = classmethod(lambda cls: cls._renamed)
        from spark_tracking._compat import pyspark as compat
        from spark_tracking.forwarding.task import executor
        print(executor.log_metric("loss", 1.0, step=0), compat.current_task_context())
        os._exit(0)  # nothing listens on port 9: no flush at exit
    """)
    assert out == "True None"
