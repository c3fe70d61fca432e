"""Test, lint and type-check aiothreads on every supported Python: ``nox``."""

from __future__ import annotations

import functools
import os
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import nox

PYTHONS = ["3.10", "3.11", "3.12", "3.13"]
# Newer Pythons than Debian 12 has: ``tests-3.14`` and ``tests-3.15`` run the
# suite on this machine's own interpreter where it has one, else on Debian
# unstable's, in a root that .ci/sid_root.sh builds once and reuses.
NEWER_PYTHONS = ["3.14", "3.15"]
SID_ROOT_SCRIPT = Path(__file__).parent / ".ci" / "sid_root.sh"


@functools.cache
def found(version: str) -> bool:
    """Whether ``python<version>`` runs on this machine."""
    try:
        completed = subprocess.run(
            [f"python{version}", "-c", "pass"], capture_output=True, check=False, timeout=30
        )
    except OSError:
        return False
    return completed.returncode == 0


def needs(
    session: nox.Session,
    *commands: str | tuple[str, ...],
    install: str = "prometheus chromium",
) -> None:
    """Skip ``session`` where a system tool it needs is missing; under CI, fail instead.

    A tuple names alternatives, any one of which will do; ``install`` names the
    Debian packages that provide them.
    """
    missing = [
        " or ".join(names)
        for names in (command if isinstance(command, tuple) else (command,) for command in commands)
        if not any(shutil.which(name) for name in names)
    ]
    if not missing:
        return
    message = f"needs {', '.join(missing)} (Debian: apt-get install {install})"
    if "CI" in os.environ:
        session.error(message)
    session.skip(message)


def preferably(version: str) -> str:
    """``version`` if this machine has it, else the Python that runs nox.

    Sessions that need one interpreter run everywhere this way; ``tests``
    runs on every supported Python it finds (and, under CI, fails for any it
    does not).
    """
    return version if found(version) else f"{sys.version_info.major}.{sys.version_info.minor}"


nox.options.sessions = [
    "tests",
    *(f"tests-{version}" for version in NEWER_PYTHONS),
    "tests_without_extras",
    "packaging",
    "downstream",
    "e2e",
    "docs",
    "benchmarks",
    "lint",
    "typing",
]
# nox's own default: a missing interpreter fails the run under CI (the CI
# variable is set) and is skipped on a developer's machine.
nox.options.reuse_existing_virtualenvs = True


nox.needs_version = ">=2025.2.9"  # for nox.project.dependency_groups
PYPROJECT = nox.project.load_toml(Path(__file__).parent / "pyproject.toml")


def groups(*names: str) -> tuple[str, ...]:
    """The requirements of these dependency groups of pyproject.toml, to install.

    Resolved here rather than by ``pip install --group`` (pip 25.1 and later),
    so that any pip will do. A group that names ``aiothreads[...]`` gets this
    checkout's extras: install it together with ``-e .``.
    """
    return nox.project.dependency_groups(PYPROJECT, *names)


# What the tests sessions install; the root of a newer Python installs the
# same with pip's own ``--group`` (its requirements hold spaces: no env string).
TEST_INSTALL = ("-e", ".", *groups("test"))
SID_ROOT_INSTALL = "-e . --group test"


@nox.session(python=PYTHONS)
def tests(session: nox.Session) -> None:
    """Run the suite with every instrumentation backend on (and, on the newest
    Python, again with all of them off).

    Each async test runs on asyncio's loop and on uvloop.
    """
    run_tests(session)


# Builds the wheel and the sdist, whatever the Python: the ``packaging`` session.
PACKAGING_TESTS = "tests/test_packaging.py"


# The suite runs in a process per CPU (pytest-xdist): most of it is Python
# code holding one CPU at a time, and no test shares a port, a file or a
# global with another process.
IN_PARALLEL = ("-n", "auto")


def run_tests(session: nox.Session) -> None:
    """The ``tests`` session's steps, in the session's virtualenv."""
    session.install(*TEST_INSTALL)
    session.run(
        "pytest", *IN_PARALLEL, "-m", "not e2e", f"--ignore={PACKAGING_TESTS}", *session.posargs
    )
    if session.python == preferably(PYTHONS[-1]):
        # Tests that choose their backends themselves learn nothing new here,
        # nor do those of processes that run apart from this one's settings.
        chooses_its_backends = [
            "tests/test_instrumentation.py",
            "tests/test_instrumentation_faults.py",
            "tests/test_instrumentation_multiprocess.py",
            "tests/test_fault_matrix.py",
            "tests/test_docs.py",
            "tests/test_docs_catch_breakage.py",
            "tests/test_docstring_examples.py",
            "tests/test_remote_executors.py",
            "tests/test_demo_service.py",
            "tests/test_inspect.py",
            "tests/test_dashboard_picture.py",
            PACKAGING_TESTS,
            # The models drive the same code with the backends off as on, and
            # the metrics model configures its own.
            *(str(path) for path in Path("tests").glob("test_model_*.py")),
        ]
        session.run(
            "pytest",
            *IN_PARALLEL,
            "-q",
            "-m",
            "not e2e",
            *(f"--ignore={path}" for path in chooses_its_backends),
            *session.posargs,
            env={"AIOTHREADS_INSTRUMENTATION": "off"},
        )


def tests_on_newer_python(version: str) -> None:
    """Define ``tests-<version>``: as ``tests`` where this machine has the Python,
    else the same suite in Debian unstable's, in a root of its own.
    """
    if found(version):

        def on_this_machine(session: nox.Session) -> None:
            run_tests(session)

        on_this_machine.__doc__ = f"The suite, as ``tests``, on this machine's Python {version}."
        nox.session(name=f"tests-{version}", python=version)(on_this_machine)
        return

    def in_sid_root(session: nox.Session) -> None:
        # Building the root and entering it (debootstrap, chroot, mounts) takes root.
        if os.geteuid() != 0:
            message = f"python{version} not found, and running Debian's in a root needs root"
            if "CI" in os.environ:
                session.error(message)
            session.skip(message)
        needs(session, "debootstrap", install="debootstrap")
        # The root has no browser and no promtool: the demo page is checked in
        # Chromium, and the exposition by promtool, in the host's sessions.
        in_a_browser = "tests/test_demo_service.py::test_the_page_shows_a_stuck_call_in_a_browser"
        by_promtool = (
            "tests/test_instrumentation_isolation.py::test_promtool_finds_nothing_to_complain_about"
        )
        session.run(
            "bash", str(SID_ROOT_SCRIPT), version, "pytest", *IN_PARALLEL, "-m", "not e2e",
            f"--deselect={in_a_browser}", f"--deselect={by_promtool}",
            f"--ignore={PACKAGING_TESTS}", *session.posargs,
            env={"AIOTHREADS_SID_INSTALL": SID_ROOT_INSTALL}, external=True,
        )  # fmt: skip

    in_sid_root.__doc__ = f"The suite on Debian unstable's Python {version}, in a root of its own."
    nox.session(name=f"tests-{version}", python=False)(in_sid_root)


for newer_python in NEWER_PYTHONS:
    tests_on_newer_python(newer_python)


ROOT = Path(__file__).parent

# A downstream client's own tests, against this checkout: aiomisc re-exports the
# decorators, subclasses IteratorWrapper and runs calls on its own executor.
AIOMISC = "aiomisc==18.0.37"
AIOMISC_TEST_DEPENDENCIES = ["aiomisc-pytest==2.0.0", "async-timeout==5.0.1", "pytest==9.1.1"]
AIOMISC_TESTS = ["tests/test_thread_pool.py", "tests/test_context_vars.py", "tests/test_io.py"]


def unpack(archive_path: Path, into: Path) -> None:
    """Unpack a source archive, refusing members that would land outside ``into``.

    Pythons older than 3.11.4 (Debian 12 ships 3.11.2) have no extraction
    filters, so the check is made here for them.
    """
    with tarfile.open(archive_path) as archive:
        if hasattr(tarfile, "data_filter"):
            archive.extractall(into, filter="data")
            return
        root = into.resolve()
        for member in archive.getmembers():
            target = (into / member.name).resolve()
            if root not in target.parents or not (member.isfile() or member.isdir()):
                raise ValueError(f"refusing to unpack {member.name!r} from {archive_path.name}")
        archive.extractall(into)  # every member was checked above


@nox.session(python=preferably(PYTHONS[-1]))
def downstream(session: nox.Session) -> None:
    """aiomisc's tests of its thread pool, context variables and file I/O, on this checkout."""
    work = Path(session.create_tmp()) / "downstream"
    session.run(
        "python", "-m", "pip", "download", "--quiet", "--no-deps", "--no-binary", ":all:",
        AIOMISC, "--dest", str(work),
    )  # fmt: skip
    (sdist,) = work.glob("aiomisc-*.tar.gz")
    unpack(sdist, work)
    source = sdist.with_name(sdist.name.removesuffix(".tar.gz"))
    # The sdist has no pytest configuration: without one, pytest would take ours.
    (source / "pytest.ini").write_text("[pytest]\n")
    session.install(str(sdist), "-e", str(ROOT), *AIOMISC_TEST_DEPENDENCIES)
    session.chdir(source)
    session.run(
        "python", "-m", "pytest", "-p", "no:cacheprovider", *AIOMISC_TESTS, *session.posargs
    )


@nox.session(python=preferably(PYTHONS[-1]))
def packaging(session: nox.Session) -> None:
    """Build the wheel and the sdist: their contents, ``twine check``, the sdist's own tests."""
    session.install(*TEST_INSTALL)
    session.run("pytest", "-q", PACKAGING_TESTS, *session.posargs)


@nox.session(python=preferably(PYTHONS[-1]))
def e2e(session: nox.Session) -> None:
    """The demo and a real Prometheus: dashboard queries, alert rules, promtool."""
    needs(session, "prometheus", "promtool")
    session.install(*TEST_INSTALL)
    session.run("pytest", "-m", "e2e", *session.posargs)


@nox.session(python=preferably(PYTHONS[-1]))
def docs(session: nox.Session) -> None:
    """Build the site strictly, run every code block, check the pages in Chromium."""
    needs(session, ("chromium", "chromium-browser", "google-chrome"))
    # The test group runs the pages' code blocks (OpenTelemetry's SDK,
    # prometheus-client, dask); the docs group alone builds the site.
    session.install("-e", ".", *groups("test", "docs"))
    session.run(
        "pytest", *IN_PARALLEL, "-q", "tests/test_docs.py", "tests/test_readme.py", *session.posargs
    )
    session.run("mkdocs", "build", "--strict", env={"NO_MKDOCS_2_WARNING": "1"})
    session.run("python", "docs/check_site.py", "site")


@nox.session(python=preferably(PYTHONS[-1]))
def benchmarks(session: nox.Session) -> None:
    """A smoke run of the benchmark suite with tiny sizes (the full run is by hand)."""
    session.install("-e", ".", *groups("bench"))
    session.run("python", "-m", "benchmarks.run", "--quick", *session.posargs)
    session.run("python", "-m", "benchmarks.handoff_floor", "--round-trips", "200", "--rounds", "1")
    session.run(
        "python", "-m", "benchmarks.instrumentation_overhead", "--rounds", "1", "--calls", "1000"
    )
    session.run("python", "-m", "benchmarks.fault_soak", "--seconds", "5", "--interval", "5")
    needs(session, "valgrind", install="valgrind")
    session.run(
        "python", "-m", "benchmarks.instruction_counts", "--calls", "500", "--modes", "prometheus"
    )


@nox.session(python=preferably(PYTHONS[-1]))
def tests_without_extras(session: nox.Session) -> None:
    """The core suite where none of the instrumentation libraries is installed."""
    session.install("-e", ".", *groups("test-core"))
    session.run(
        "pytest",
        *IN_PARALLEL,
        "-q",
        "-m",
        "not e2e",
        "--ignore=tests/test_docs.py",
        "--ignore=tests/test_instrumentation.py",
        "--ignore=tests/test_instrumentation_isolation.py",
        "--ignore=tests/test_fault_matrix.py",  # it counts calls with prometheus-client
        "--ignore=tests/test_instrumentation_faults.py",
        "--ignore=tests/test_instrumentation_multiprocess.py",
        "--ignore=tests/test_end_to_end.py",
        "--ignore=tests/test_pool_metrics.py",  # it reads both metrics backends
        "--ignore=tests/test_free_threading_stress.py",  # it scrapes both metrics backends
        "--ignore=tests/test_demo_service.py",  # the demo serves Prometheus metrics
        "--ignore=tests/test_model_metrics.py",  # it models the metrics of both backends
        "--ignore=tests/test_unsampled_parents.py",  # it samples with the OpenTelemetry SDK
        "--ignore=tests/test_multiprocess_backend.py",  # it reads prometheus-client's metrics
        "--ignore=tests/test_structlog_choice.py",  # it configures structlog
        *session.posargs,
    )
    session.run("python", "-m", "tests.check_no_extras")


@nox.session(python=preferably(PYTHONS[-1]), default=False)
def models(session: nox.Session) -> None:
    """Long random searches of the stateful model tests; by hand: ``nox -s models``.

    CI runs each model a fixed number of times with a fixed seed; this runs
    ``AIOTHREADS_LONG_SEARCH`` (default 50) times as many examples, drawn at
    random, from ``tests/test_model_*.py``. Arguments replace those files, e.g.
    ``nox -s models -- tests/test_model_limiter.py``.
    """
    session.install(*TEST_INSTALL)
    factor = os.environ.get("AIOTHREADS_LONG_SEARCH", "50")
    session.run(
        "pytest",
        "-q",
        "--timeout=0",
        *(session.posargs or sorted(str(path) for path in Path("tests").glob("test_model_*.py"))),
        env={"AIOTHREADS_LONG_SEARCH": factor},
    )


MUTMUT = "mutmut==3.8.1"

MUTATION_PARTS: dict[str, tuple[str, ...]] = {
    "1": ("_wrapper", "_bridge", "_cancellation", "_limits", "instrumentation._hooks"),
    "2": ("_channel", "_executor"),
    "3": ("instrumentation._probes", "_pool"),
    "4": ("_threaded", "_iterable", "_remote"),
    "5": ("_inflight", "_pool_state"),
    "6": ("instrumentation._tallies", "instrumentation._prometheus"),
    "7": (
        "instrumentation._prometheus_multiprocess",
        "instrumentation._pool_publisher",
        "instrumentation._carried",
        "instrumentation._logs",
        "instrumentation._snapshot_signal",
        "instrumentation",
    ),
    "8": (
        "instrumentation._config",
        "instrumentation._otel",
        "instrumentation._otel_metrics",
        "instrumentation._backends",
    ),
    "9": ("inspect",),
    "10": ("_inspection", "_asyncio_internals", "_inbox", "_loops", "_watchdog"),
    "11": (
        "_separate",
        "_validate",
        "_compat",
        "_future",
        "_binding",
        "_outcomes",
        "_decorating",
        "_errors",
        "_eager",
        "_log",
        "_names",
        "coroutine_waiter",
        "iterator_wrapper",
        "new_thread",
        "threaded_iterable",
        "threads",
        "types",
        "_version",
        "grafana",
        "grafana.__main__",
        "",
    ),
}
"""The modules of each part of a mutation run: at most about 800 mutants, under an hour here."""


def mutant_names(part: str) -> list[str]:
    """Return the mutant name patterns of ``part`` (its modules; ``""`` is the package root)."""
    if part not in MUTATION_PARTS:
        raise ValueError(f"no mutation part {part!r}: choose one of {sorted(MUTATION_PARTS)}")
    return [
        f"aiothreads.{module}.x*" if module else "aiothreads.x*" for module in MUTATION_PARTS[part]
    ]


@nox.session(python=preferably("3.12"), default=False)  # 3.11: mutmut's stats run crashed
def mutation(session: nox.Session) -> None:
    """Mutation testing of the package with mutmut; by hand only: ``nox -s mutation``.

    ``[tool.mutmut]`` in pyproject.toml says what is mutated (the package
    but the demo). ``-- part N`` runs the mutants of one part of
    ``MUTATION_PARTS``, each under an hour here; other arguments select
    mutants by name, e.g. ``nox -s mutation -- 'aiothreads._limits.x*'``.
    Prints every mutant the tests did not catch, then the score per module;
    docs/mutation-score.md has the latest score, and
    docs/mutation-equivalents.md the survivors known to be equivalent, with
    the reason.
    """
    names = list(session.posargs)
    if names[:1] == ["part"]:
        names = mutant_names(names[1] if len(names) > 1 else "")
    session.install(*TEST_INSTALL, MUTMUT)
    children = os.environ.get("MUTATION_CHILDREN") or str(os.cpu_count() or 2)
    session.run("mutmut", "run", "--max-children", children, *names)
    session.run("mutmut", "results")
    session.run("python", "-m", "tests.mutation_score")


@nox.session(python=preferably(PYTHONS[0]))
def lint(session: nox.Session) -> None:
    """Ruff lint and format checks."""
    session.install("ruff>=0.5")
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")


@nox.session(python=preferably(PYTHONS[0]))
def typing(session: nox.Session) -> None:
    """mypy --strict and pyright on the package, and the decorators' typing contract.

    The demo's tracing set-up is checked against the OpenTelemetry SDK and OTLP
    exporter it uses when they are installed.
    """
    session.install(
        "-e",
        ".[all]",
        *groups("lint"),
        "typing_extensions",
        "opentelemetry-sdk>=1.20",
        "opentelemetry-exporter-otlp-proto-http>=1.20",
    )
    session.run("mypy")
    session.run("pyright")
    session.run("mypy", "--strict", "--warn-unused-ignores", "tests/typing/decorator_types.py")
    session.run(
        "pyright",
        "-p",
        "tests/typing/pyrightconfig.json",
        "--pythonpath",
        session.virtualenv.bin + "/python",
    )
