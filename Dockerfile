# crsmon image: the package and its console script on a slim Python base.
FROM python:3.11-slim
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 CRSMON_RISK_MODEL_DIR=/app/models
WORKDIR /app
COPY pyproject.toml README.md ./
COPY crsmon ./crsmon
COPY workers ./workers
COPY examples ./examples
COPY models ./models
RUN pip install --no-cache-dir . \
    && useradd --system --uid 10001 crsmon
USER crsmon
ENTRYPOINT ["crsmon"]
CMD ["--help"]
