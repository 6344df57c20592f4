"""training floor (F4): the shared training loop and its methods; see docs/architecture.md.

    engine       Trainer: setup -> steps -> saves for any method (accelerate, NaN watchdog,
                 atomic saves, resume, previews, logs); TrainingMethod is what a method supplies
    lora         LoraMethod and train_lora(config, base_model, ...) (the first method)
    lora_setup   accelerator, dataset/step plan, base model, components for a LoRA run
    lora_network peft adapters on kohya's default targets -> formats.lora.LoraNetwork
    config       LoraTrainingConfig (sd-scripts names); config_file: flat TOML in/out
    optim        optimisers and lr schedules by sd-scripts' names
    objective    DDPM noising, epsilon/v targets, min-SNR, noise offset
    text         captions -> context, differentiable (clip skip, 75/150/225 tokens)
    samples      kohya prompt files, preview requests, preview images with infotext
    state        resumable state folders; logs: CSV, TensorBoard, loss curve; metadata: ss_*
    data/        datasets, captions, buckets, latent cache, step arithmetic

Nothing is imported here, so `import brushwork.training.data` stays light.
"""
