"""RunWatch: the run each binding was made for, though MLflow creates the run only after the
binding is made (run-context providers are asked first) and the run may end before anyone asks."""

from types import SimpleNamespace

from spark_tracking.forwarding.driver.run_watch import RunWatch


def _run(run_id):
    return SimpleNamespace(info=SimpleNamespace(run_id=run_id))


def test_each_binding_keeps_its_run_through_nested_and_sequential_runs():
    watch, stack = RunWatch(interval=3600), []  # only run_of and watch look: no thread timing
    try:
        watch.watch("t", "t.1:0", stack)  # start_run(): the binding comes before the run exists
        stack.append(_run("parent"))
        watch.watch("t", "t.2:0", stack)  # a nested run: the parent is kept now
        stack.append(_run("child"))
        assert watch.run_of("t.2:0") == "child"
        stack.pop()  # the child ends, then the parent
        stack.pop()
        watch.watch("t", "t.3:0", stack)  # the next run
        stack.append(_run("next"))
        assert [watch.run_of(b) for b in ("t.1:0", "t.2:0", "t.3:0")] == ["parent", "child", "next"]
        assert watch.superseded("t", "t.1:0") and not watch.superseded("t", "t.3:0")
        assert not watch.superseded("other", "other.9:0")  # a thread it never saw
    finally:
        watch.stop()


def test_a_run_that_never_appears_is_given_up_after_the_patience():
    now = [0.0]
    watch, stack = RunWatch(interval=3600, patience=60, clock=lambda: now[0]), []
    try:
        watch.watch("t", "t.1:0", stack)  # the run's creation failed: nothing is pushed
        now[0] = 61.0
        assert watch.run_of("t.1:0") is None
        stack.append(_run("later"))  # a run pushed much later is not this binding's
        assert watch.run_of("t.1:0") is None
    finally:
        watch.stop()


def test_the_watching_thread_keeps_a_run_that_ended_before_anyone_asked():
    import threading

    watch, stack = RunWatch(interval=0.001), []
    done = threading.Event()
    original = watch._look

    def look():  # every look, the thread's included: the one that finds the run says so
        original()
        if "t.1:0" in watch._runs:
            done.set()

    watch._look = look
    try:
        watch.watch("t", "t.1:0", stack)
        stack.append(_run("short"))
        assert done.wait(60)
        stack.pop()  # the run ended; nobody asked while it was on the stack
        assert watch.run_of("t.1:0") == "short"
    finally:
        watch.stop()
