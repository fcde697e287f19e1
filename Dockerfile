# Slim multi-stage image; the default command serves the shop example.
#   docker build -t wirebus-shop . && docker run -p 50051:50051 wirebus-shop
FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml README.md buf.yaml buf.gen.yaml ./
COPY src ./src
COPY proto ./proto
RUN pip install --no-cache-dir '.[codegen]' \
 && buf generate \
 && pip wheel --no-cache-dir --wheel-dir /wheels '.[uvloop,kafka,sql]'

FROM python:3.11-slim
RUN useradd --create-home --uid 10001 wirebus
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir /wheels/*.whl && rm -rf /wheels
WORKDIR /app
COPY --from=build /src/gen/python ./gen/python
COPY examples ./examples
ENV PYTHONPATH=/app/gen/python:/app PYTHONUNBUFFERED=1
USER wirebus
EXPOSE 50051
STOPSIGNAL SIGTERM
CMD ["wirebus", "serve", "examples.shop.app:app", "--host", "0.0.0.0", "--port", "50051"]
