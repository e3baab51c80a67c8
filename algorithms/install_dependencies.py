"""berunda:install_dependencies — pip-install torch, segmentation-models-pytorch and
rasterio into Berunda's own package folder, for the Python that runs QGIS."""
from __future__ import annotations

import os
import sys
import time

from qgis.core import (QgsProcessingException, QgsProcessingOutputFile,
                       QgsProcessingOutputFolder, QgsProcessingParameterBoolean,
                       QgsProcessingParameterEnum, QgsProcessingParameterFile)

from ..berunda_plugin import dependencies, installer, wheelhouse
from .base import SetupAlgorithm


class InstallDependenciesAlgorithm(SetupAlgorithm):
    TARGET_FOLDER = "TARGET_FOLDER"
    REQUIREMENTS = "REQUIREMENTS"
    TORCH_BUILD = "TORCH_BUILD"
    WHEELHOUSE = "WHEELHOUSE"
    WITH_ONNX = "WITH_ONNX"
    LOG = "LOG"

    def name(self):
        return "install_dependencies"

    def displayName(self):  # noqa: N802
        return "Install dependencies (torch, segmentation-models-pytorch, rasterio)"

    def shortHelpString(self):  # noqa: N802
        return (
            "Installs the Python packages Berunda computes with — torch, "
            "segmentation-models-pytorch, rasterio, at the versions in Berunda's requirements "
            "file — with pip, for the Python that runs QGIS, into a folder that belongs to Berunda. "
            "QGIS itself never loads them: Berunda's engine runs in its own process with this "
            "folder first on its path, so these packages win over older copies QGIS ships, and "
            "no QGIS restart is needed. numpy and the GDAL bindings stay at the versions QGIS "
            "runs with (numpy 1 on QGIS 3.22, numpy 2 on 3.40 and later). Needs an internet "
            "connection (torch is large: allow some minutes) — or a WHEELHOUSE. The pip log is "
            "shown while it runs; Cancel stops pip. At the end the engine is started once to "
            "check that it imports everything.<br>"
            "<b>WHEELHOUSE</b> (optional): a folder of wheels to install from, with no network "
            "at all — for machines without internet. Make it on a connected machine with pip "
            "download for this machine's Python and platform: run this algorithm once without "
            "network and it prints the exact command (README, 'Installing without internet').<br>"
            "<b>TARGET_FOLDER</b>: where the packages go (default: Berunda's package folder in "
            f"your QGIS profile, or ${dependencies.PACKAGES_ENV} when set).<br>"
            "<b>REQUIREMENTS</b>: pip requirements file (default: the plugin's "
            "requirements/requirements.txt).<br>"
            "<b>TORCH_BUILD</b>: auto (cuda when an NVIDIA GPU is present, i.e. nvidia-smi is "
            "found, else cpu), cpu (PyTorch's small CPU-only wheels) or cuda (GPU build) "
            "(default: auto).<br>"
            "<b>WITH_ONNX</b>: also install onnx and onnxruntime (requirements/onnx.txt), which "
            "'Export model to ONNX' needs (default: no).<br>"
            "Outputs: <b>TARGET_FOLDER</b> and <b>LOG</b>, the pip log file.")

    def initAlgorithm(self, config=None):  # noqa: N802
        self.addParameter(self.advanced(QgsProcessingParameterFile(
            self.TARGET_FOLDER, "Install into folder", QgsProcessingParameterFile.Behavior.Folder,
            defaultValue=dependencies.package_folder(), optional=True)))
        self.addParameter(self.advanced(QgsProcessingParameterFile(
            self.REQUIREMENTS, "pip requirements file", extension="txt",
            defaultValue=dependencies.REQUIREMENTS_FILE, optional=True)))
        self.addParameter(self.advanced(QgsProcessingParameterEnum(
            self.TORCH_BUILD, "torch build", installer.TORCH_BUILDS, defaultValue="auto",
            usesStaticStrings=True)))
        self.addParameter(QgsProcessingParameterFile(
            self.WHEELHOUSE, "Install from a folder of wheels (no internet needed)",
            QgsProcessingParameterFile.Behavior.Folder, optional=True))
        self.addParameter(QgsProcessingParameterBoolean(
            self.WITH_ONNX, "Also install onnx and onnxruntime (for ONNX export)", False))
        self.addOutput(QgsProcessingOutputFolder(self.TARGET_FOLDER, "Package folder"))
        self.addOutput(QgsProcessingOutputFile(self.LOG, "pip log"))

    @staticmethod
    def offline_message(reason, requirements, with_onnx, pins, build):
        """pip cannot reach its index: say so at once, with the way to install offline."""
        wanted = [requirements] + ([dependencies.ONNX_REQUIREMENTS_FILE] if with_onnx else [])
        download = installer.format_command(wheelhouse.download_command(
            wanted, [dependencies.CONSTRAINTS_FILE], pins, build))
        return (f"pip cannot reach its package index from this machine ({reason}). To install "
                "without internet, run on a machine that has it (any system, Python 3.8 or "
                f"later with pip):\n    {download}\nthen copy the folder berunda-wheelhouse here "
                "and run 'Install dependencies' again with WHEELHOUSE set to it "
                f"({wheelhouse.WHEELHOUSE_HELP}). If this machine has internet, check its proxy "
                "settings (HTTPS_PROXY, or the proxy in pip's configuration).")

    def check_engine(self, feedback):
        """Start the engine once, as every algorithm will: it imports torch & co. from the
        package folder and reports their versions and the device."""
        feedback.pushInfo("Checking that Berunda's engine starts with these packages…")
        try:
            record = self.engine(["diagnostics", "--json"], feedback)["ENVIRONMENT"]
        except QgsProcessingException as exc:
            feedback.reportError(f"The packages are installed, but Berunda's engine does not start "
                                 f"with them: {exc}")
            return
        problems = [p["message"] for p in record["packages"] if p["state"] in ("missing",
                                                                                 "incompatible")]
        if problems:
            feedback.reportError("Berunda's engine still lacks: " + "; ".join(problems))
        else:
            feedback.pushInfo("Berunda's engine starts and finds all its packages: "
                              + ", ".join(f"{p['name']} {p['version']}" for p in record["packages"])
                              + ". " + record["device"]["summary"])

    def compute(self, parameters, context, feedback):
        target = (self.parameterAsFile(parameters, self.TARGET_FOLDER, context) or "").strip()
        target = target or dependencies.package_folder()
        requirements = (self.parameterAsFile(parameters, self.REQUIREMENTS, context) or "").strip()
        requirements = os.path.abspath(requirements or dependencies.REQUIREMENTS_FILE)
        if not os.path.isfile(requirements):
            raise QgsProcessingException(
                f"REQUIREMENTS: {requirements} does not exist. Give a pip requirements file, or "
                f"leave it empty for Berunda's own ({dependencies.REQUIREMENTS_FILE}).")
        wheels = (self.parameterAsFile(parameters, self.WHEELHOUSE, context) or "").strip()
        try:
            build = installer.resolve_torch_build(
                self.parameterAsEnumString(parameters, self.TORCH_BUILD, context))
            wheels = wheelhouse.check_wheelhouse(wheels) if wheels else ""
            target = installer.check_target(target)
        except installer.InstallError as exc:
            raise QgsProcessingException(str(exc)) from None

        python = dependencies.python_executable()
        # The log and the generated constraints stay beside the packages (a temporary folder
        # would vanish with qgis_process), so the manual command below keeps working.
        logs = os.path.join(target, installer.LOG_FOLDER_NAME)
        stamp = time.strftime("%Y%m%d-%H%M%S")
        log_path = os.path.join(logs, f"pip-install-{stamp}.log")
        pins = dependencies.qgis_pins()
        generated = os.path.join(logs, "qgis-constraints.txt")
        with_onnx = self.parameterAsBoolean(parameters, self.WITH_ONNX, context)
        extra = ["-r", dependencies.ONNX_REQUIREMENTS_FILE] if with_onnx else []
        source = (wheelhouse.wheelhouse_args(wheels) if wheels
                  else installer.torch_index_args(build, requirements))
        cmd = installer.pip_command(python, target, requirements,
                                    [dependencies.CONSTRAINTS_FILE, generated], extra + source)
        command = installer.format_command(cmd)
        manual = (f"To install by hand, run in a terminal (with the Python that runs QGIS):\n"
                  f"    {command}")
        try:
            pip_version = installer.check_pip(python)
        except installer.InstallError as exc:
            raise QgsProcessingException(f"{exc}\n{manual}") from None
        if not wheels:
            unreachable = wheelhouse.index_unreachable(python)
            if unreachable:
                raise QgsProcessingException(self.offline_message(
                    unreachable, requirements, with_onnx, pins, build))
        installer.log_folder(target)
        installer.write_constraints(generated, pins)

        feedback.pushInfo(f"Python: {python} ({pip_version})")
        feedback.pushInfo(f"Installing into: {target}")
        feedback.pushInfo(f"torch build: {build}")
        feedback.pushInfo("Kept at QGIS's versions: " + ", ".join(f"{k}=={v}" for k, v in pins.items()))
        if wheels:
            feedback.pushInfo(f"Installing from the wheelhouse {wheels} alone (no network).")
        feedback.pushInfo(f"Running: {command}")
        feedback.pushInfo(f"pip log: {log_path}")
        with open(generated, encoding="utf-8") as handle:
            generated_text = handle.read()
        header = (f"# berunda:install_dependencies\n# command: {command}\n# torch build: {build}\n"
                  f"# constraints {dependencies.CONSTRAINTS_FILE} and {generated}:\n"
                  + "".join(f"#   {line}\n" for line in generated_text.splitlines()))
        feedback.setProgress(5)
        progress = [5.0]
        tail = []

        def on_line(line):
            tail.append(line)
            del tail[:-20]
            feedback.pushConsoleInfo(line)
            progress[0] = installer.progress_from_line(line, progress[0])
            feedback.setProgress(progress[0])

        start = time.monotonic()
        try:
            code = installer.run_streaming(cmd, log_path, on_line, feedback.isCanceled, header)
        except installer.Cancelled as exc:
            raise QgsProcessingException(f"{exc} The pip log: {log_path}") from None
        except OSError as exc:
            raise QgsProcessingException(f"Cannot start pip ({exc}).\n{manual}") from None
        if code != 0:
            raise QgsProcessingException(
                f"pip failed (exit code {code}) after {installer.elapsed(start)}. Its last lines:\n"
                + "\n".join(tail[-8:]) + f"\nThe whole pip log: {log_path}\n"
                + ("Check that the wheelhouse was made for this machine's Python "
                   f"{sys.version_info[0]}.{sys.version_info[1]} and platform, and holds every "
                   "package (the messages above name the missing one). " if wheels else
                   "Check the internet connection and the messages above (a version that does "
                   "not exist for your platform or Python, a conflict with the numpy or GDAL "
                   "versions QGIS ships, a proxy, no disk space); without internet, give a "
                   f"WHEELHOUSE ({wheelhouse.WHEELHOUSE_HELP}). ") + manual)
        feedback.setProgress(100)
        feedback.pushInfo(f"Installed in {installer.elapsed(start)} into {target}.")
        if os.path.realpath(target) == os.path.realpath(dependencies.package_folder()):
            self.check_engine(feedback)
        else:
            feedback.pushInfo(f"{target} is not Berunda's package folder "
                              f"({dependencies.package_folder()}): set "
                              f"{dependencies.PACKAGES_ENV}={target} for Berunda's engine to use it.")
        return {self.TARGET_FOLDER: target, self.LOG: log_path}
