# topicguard serve in a container: CPU-only PyTorch, a non-root user, the model folder at /model.
#
#   docker build -t topicguard .
#   docker run --rm -p 8000:8000 -v "$PWD/runs/guard:/model:ro" topicguard
#   docker run --rm -p 8000:8000 -v "$PWD/runs/guard:/model:ro" topicguard --workers 2
#
# Arguments after the image name are added to `topicguard serve /model --host 0.0.0.0
# --port 8000`. To ship a guard inside an image instead of mounting it:
#   FROM topicguard
#   COPY --chown=guard:guard runs/guard /model

FROM python:3.11-slim AS build
# The CPU wheel of the torch that constraints.txt pins: PyPI's default build brings CUDA (GBs).
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_EXTRA_INDEX_URL=https://download.pytorch.org/whl/cpu
WORKDIR /build
COPY pyproject.toml constraints.txt README.md ./
COPY src ./src
RUN python -m venv /opt/topicguard \
 && /opt/topicguard/bin/pip install -c constraints.txt ".[serve]"

FROM python:3.11-slim
COPY --from=build /opt/topicguard /opt/topicguard
RUN useradd --create-home --uid 10001 guard && mkdir /model && chown guard:guard /model
ENV PATH=/opt/topicguard/bin:$PATH \
    HF_HUB_OFFLINE=1 \
    PYTHONUNBUFFERED=1 \
    TOPICGUARD_CACHE=/home/guard/.cache/topicguard
USER guard
WORKDIR /home/guard
EXPOSE 8000
# Ready means the model is loaded and warm: what a load balancer should wait for.
HEALTHCHECK --interval=15s --timeout=3s --start-period=120s --retries=3 \
  CMD ["python", "-c", "import sys, urllib.request; sys.exit(urllib.request.urlopen('http://127.0.0.1:8000/readyz', timeout=2).status != 200)"]
ENTRYPOINT ["topicguard", "serve", "/model", "--host", "0.0.0.0", "--port", "8000"]
CMD []
