# Training image: the locked team environment (CUDA-capable torch) and the training code.
# Its only build step is tasks/setup.sh, which CI runs on every change, so the image's install is tested
# even where no Docker engine is available. (The slim API image comes with the serving work.)
#   docker build -t apparel-train . && docker run --gpus all -e FASHION_MNIST_MIRROR=... apparel-train
FROM python:3.11-slim
RUN apt-get update && apt-get install -y --no-install-recommends git && rm -rf /var/lib/apt/lists/*
WORKDIR /app
COPY . .
RUN ./tasks/setup.sh
ENTRYPOINT ["./tasks/train.sh"]
