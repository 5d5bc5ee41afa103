//! Tests of `vllm_core::estimate` against hand-computed figures: the reference captures'
//! tiny Llama, Llama-3.1-8B, Qwen2.5-7B and Mixtral-8x7B configs, the GPU and CPU checks,
//! and load-time estimates.

use serde_json::{Value, json};
use vllm_core::estimate::{
    CPU_RUNTIME_OVERHEAD_MB, EstimateInput, LOAD_FIXED_SECONDS, MemoryEstimate, check_cpu,
    check_gpus, dtype_bytes, estimate, estimated_load_seconds, model_max_len, param_count,
    quant_bytes,
};
use vllm_core::gpu::GpuSnapshot;

/// The reference captures' model: LlamaConfig(vocab_size=1024, hidden_size=64,
/// intermediate_size=128, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
/// head_dim=32, max_position_embeddings=2048), saved in float32.
fn tiny() -> Value {
    json!({
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "vocab_size": 1024,
        "hidden_size": 64,
        "intermediate_size": 128,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "head_dim": 32,
        "max_position_embeddings": 2048,
        "rms_norm_eps": 1e-6,
        "tie_word_embeddings": false,
        "torch_dtype": "float32"
    })
}

/// meta-llama/Llama-3.1-8B's config.json (the fields that matter).
fn llama_8b() -> Value {
    json!({
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "vocab_size": 128256,
        "hidden_size": 4096,
        "intermediate_size": 14336,
        "num_hidden_layers": 32,
        "num_attention_heads": 32,
        "num_key_value_heads": 8,
        "max_position_embeddings": 131072,
        "rope_scaling": {
            "factor": 8.0,
            "high_freq_factor": 4.0,
            "low_freq_factor": 1.0,
            "original_max_position_embeddings": 8192,
            "rope_type": "llama3"
        },
        "tie_word_embeddings": false,
        "torch_dtype": "bfloat16"
    })
}

fn input(config: &Value) -> EstimateInput<'_> {
    EstimateInput {
        config: Some(config),
        tensor_parallel_size: 1,
        pipeline_parallel_size: 1,
        ..EstimateInput::default()
    }
}

fn gpu(index: u32, total: u64, free: u64) -> GpuSnapshot {
    GpuSnapshot {
        index,
        memory_total_mb: Some(total),
        memory_free_mb: Some(free),
        memory_used_mb: Some(total - free),
        ..GpuSnapshot::default()
    }
}

#[test]
fn tiny_model_parameters() {
    // embedding            1024 × 64                         =  65,536
    // per layer: q_proj    64 × (4 × 32)                     =   8,192
    //            k_proj    64 × (2 × 32)                     =   4,096
    //            v_proj    64 × (2 × 32)                     =   4,096
    //            o_proj    (4 × 32) × 64                     =   8,192
    //            gate, up, down  3 × 64 × 128                =  24,576
    //            2 RMSNorms  2 × 64                          =     128
    //            layer total                                 =  49,280
    // 2 layers                                               =  98,560
    // final norm                                             =      64
    // lm_head (untied) 1024 × 64                             =  65,536
    // total          65,536 + 98,560 + 64 + 65,536           = 229,696
    assert_eq!(param_count(&tiny()), Some(229_696));
}

#[test]
fn tiny_model_estimate_float32() {
    let config = tiny();
    let est = estimate(EstimateInput {
        dtype: Some("float32"),
        max_model_len: Some(512),
        ..input(&config)
    });
    // weights: 229,696 × 4 B = 918,784 B = 0.876 MiB → 1 MiB (rounded up)
    assert_eq!(est.weights_mb, Some(1));
    assert_eq!(est.weights_source, "config_params");
    // KV: 2 × 2 layers × 2 kv heads × 32 head_dim × 4 B × 512 = 524,288 B = 0.5 MiB → 1 MiB
    assert_eq!(est.kv_cache_mb, Some(1));
    // per GPU: (918,784 + 524,288) B = 1.376 MiB → 2 MiB
    assert_eq!(est.per_gpu_mb, Some(2));
    assert_eq!(est.total_mb, Some(2));
    assert_eq!(est.max_model_len, Some(512));
}

#[test]
fn tiny_model_safetensors_size_wins() {
    let config = tiny();
    let est = estimate(EstimateInput {
        weights_bytes: Some(10 * 1024 * 1024),
        dtype: Some("float32"),
        max_model_len: Some(512),
        ..input(&config)
    });
    assert_eq!(est.weights_source, "safetensors");
    assert_eq!(est.weights_mb, Some(10));
    // 10 MiB + 0.5 MiB of KV → 11 MiB.
    assert_eq!(est.per_gpu_mb, Some(11));
    // Without a max_model_len the model's own, 2048: KV = 4 × 0.5 MiB = 2 MiB.
    let est = estimate(EstimateInput {
        dtype: Some("float32"),
        ..input(&config)
    });
    assert_eq!(est.max_model_len, Some(2048));
    assert_eq!(est.kv_cache_mb, Some(2));
}

#[test]
fn llama_8b_parameters_within_one_percent() {
    // embedding 128,256 × 4,096                                   =   525,336,576
    // per layer: q 4096×4096 + k,v 2×4096×1024 + o 4096×4096      =    41,943,040
    //            MLP 3 × 4096 × 14336                             =   176,160,768
    //            norms 2 × 4096                                   =         8,192
    //            layer                                            =   218,112,000
    // 32 layers                                                   = 6,979,584,000
    // final norm 4,096 + lm_head 525,336,576
    // total                                                       = 8,030,261,248
    let n = param_count(&llama_8b()).unwrap();
    assert_eq!(n, 8_030_261_248);
    assert!((n as f64 - 8.03e9).abs() / 8.03e9 < 0.01);
}

#[test]
fn llama_8b_estimate_bf16() {
    let config = llama_8b();
    let est = estimate(EstimateInput {
        max_model_len: Some(8192),
        ..input(&config)
    });
    // weights: 8,030,261,248 × 2 B = 16,060,522,496 B = 15,316.51 MiB → 15,317 MiB (≈ 16 GB)
    assert_eq!(est.weights_mb, Some(15_317));
    // KV at 8192 tokens: 2 × 32 × 8 × 128 × 2 B × 8192 = 1,073,741,824 B = 1 GiB
    assert_eq!(est.kv_cache_mb, Some(1024));
    // per GPU: 15,316.51 + 1,024 = 16,340.51 → 16,341 MiB
    assert_eq!(est.per_gpu_mb, Some(16_341));
    assert_eq!(est.total_mb, Some(16_341));
}

#[test]
fn tensor_parallel_two_halves_the_per_gpu_share() {
    let config = llama_8b();
    let est = estimate(EstimateInput {
        max_model_len: Some(8192),
        tensor_parallel_size: 2,
        ..input(&config)
    });
    // weights 15,316.51 / 2 = 7,658.25 MiB; KV 4 of the 8 heads: 512 MiB → 8,170.25 → 8,171
    assert_eq!(est.per_gpu_mb, Some(8_171));
    // The whole is unchanged.
    assert_eq!(est.weights_mb, Some(15_317));
    assert_eq!(est.kv_cache_mb, Some(1024));
    assert_eq!(est.total_mb, Some(16_341));

    // tp=16 > 8 KV heads: every rank still holds one head (vLLM replicates), so the KV
    // summed over the ranks is twice the plain 1 GiB.
    let est = estimate(EstimateInput {
        max_model_len: Some(8192),
        tensor_parallel_size: 16,
        ..input(&config)
    });
    assert_eq!(est.kv_cache_mb, Some(2048));
}

#[test]
fn pipeline_parallel_splits_layers() {
    let config = llama_8b();
    let est = estimate(EstimateInput {
        max_model_len: Some(8192),
        pipeline_parallel_size: 2,
        ..input(&config)
    });
    // 16 layers per stage: half the KV and half the weights per GPU, as with tp=2.
    assert_eq!(est.per_gpu_mb, Some(8_171));
}

#[test]
fn awq_is_about_a_third_to_a_quarter() {
    let config = llama_8b();
    let est = estimate(EstimateInput {
        quantization: Some("awq"),
        max_model_len: Some(8192),
        ..input(&config)
    });
    // linear layers 32 × (41,943,040 + 176,160,768) = 6,979,321,856 params × 0.5 B
    //   = 3,489,660,928 B
    // embeddings, lm_head, norms (1,050,673,152 + 266,240) × 2 B = 2,101,878,784 B
    // total 5,591,539,712 B = 5,332.51 MiB → 5,333 MiB (real AWQ checkpoints: ≈ 5.7 GB)
    assert_eq!(est.weights_mb, Some(5_333));
    let ratio = 5_333.0 / 15_317.0;
    assert!((0.25..0.4).contains(&ratio), "{ratio}");
    // The same from the config's own quantization_config, with its bits.
    let mut q = llama_8b();
    q["quantization_config"] = json!({"quant_method": "awq", "bits": 4, "group_size": 128});
    assert_eq!(estimate(input(&q)).weights_mb, Some(5_333));
    // The KV cache stays in the activation dtype.
    assert_eq!(est.kv_cache_mb, Some(1024));
}

#[test]
fn fp8_kv_cache_halves_the_kv() {
    let config = llama_8b();
    let est = estimate(EstimateInput {
        kv_cache_dtype: Some("fp8_e4m3"),
        max_model_len: Some(8192),
        ..input(&config)
    });
    assert_eq!(est.kv_cache_mb, Some(512));
}

#[test]
fn the_unknown_case_estimates_nothing() {
    let est = estimate(EstimateInput {
        tensor_parallel_size: 1,
        pipeline_parallel_size: 1,
        ..EstimateInput::default()
    });
    assert_eq!(
        est,
        MemoryEstimate {
            weights_mb: None,
            kv_cache_mb: None,
            per_gpu_mb: None,
            total_mb: None,
            max_model_len: None,
            weights_source: "unknown",
            notes: est.notes.clone(),
        }
    );
    assert!(
        est.notes.iter().any(|n| n.contains("proceeds")),
        "{:?}",
        est.notes
    );
    // Serializes for the tool answer.
    let v = serde_json::to_value(&est).unwrap();
    assert_eq!(v["weights_source"], "unknown");
    assert!(v["per_gpu_mb"].is_null());
}

#[test]
fn weights_without_a_config_are_a_lower_bound() {
    let est = estimate(EstimateInput {
        weights_bytes: Some(2048 * 1024 * 1024),
        tensor_parallel_size: 2,
        pipeline_parallel_size: 1,
        ..EstimateInput::default()
    });
    assert_eq!(est.weights_mb, Some(2048));
    assert_eq!(est.kv_cache_mb, None);
    assert_eq!(est.per_gpu_mb, Some(1024));
    assert!(est.notes.iter().any(|n| n.contains("lower bound")));
}

#[test]
fn max_len_keys_and_rope_scaling() {
    // llama3 scaling: positions already count it.
    assert_eq!(model_max_len(&llama_8b()), Some(131_072));
    assert_eq!(model_max_len(&tiny()), Some(2048));
    // The smallest key wins; GPT-2's n_positions.
    assert_eq!(model_max_len(&json!({"n_positions": 1024})), Some(1024));
    assert_eq!(
        model_max_len(&json!({"max_position_embeddings": 4096, "seq_length": 2048})),
        Some(2048)
    );
    // Linear/dynamic scaling multiplies.
    assert_eq!(
        model_max_len(&json!({
            "max_position_embeddings": 4096,
            "rope_scaling": {"type": "linear", "factor": 2.0}
        })),
        Some(8192)
    );
    // YaRN scales the original length (Qwen2.5 with YaRN ×4).
    assert_eq!(
        model_max_len(&json!({
            "max_position_embeddings": 32768,
            "rope_scaling": {"type": "yarn", "factor": 4.0, "original_max_position_embeddings": 32768}
        })),
        Some(131_072)
    );
    // Transformers 5's rope_parameters, per layer type, default type: no change.
    assert_eq!(
        model_max_len(&json!({
            "max_position_embeddings": 2048,
            "rope_parameters": {"full_attention": {"rope_type": "default", "rope_theta": 10000.0}}
        })),
        Some(2048)
    );
    // Gemma 3's length is already scaled.
    assert_eq!(
        model_max_len(&json!({
            "model_type": "gemma3_text",
            "max_position_embeddings": 131072,
            "rope_scaling": {"rope_type": "linear", "factor": 8.0}
        })),
        Some(131_072)
    );
    // model_max_length overrides (Command-R).
    assert_eq!(
        model_max_len(&json!({"max_position_embeddings": 8192, "model_max_length": 131072})),
        Some(131_072)
    );
    // Multimodal: the text model's.
    assert_eq!(
        model_max_len(&json!({
            "model_type": "llava",
            "text_config": {"max_position_embeddings": 32768},
            "vision_config": {"image_size": 336}
        })),
        Some(32768)
    );
    assert_eq!(model_max_len(&json!({"hidden_size": 64})), None);
}

#[test]
fn qwen2_and_mixtral_parameters() {
    // Qwen2.5-7B: q/k/v biases; published count 7,615,616,512.
    let qwen = json!({
        "model_type": "qwen2", "vocab_size": 152064, "hidden_size": 3584,
        "intermediate_size": 18944, "num_hidden_layers": 28, "num_attention_heads": 28,
        "num_key_value_heads": 4, "tie_word_embeddings": false
    });
    assert_eq!(param_count(&qwen), Some(7_615_616_512));
    // Mixtral-8x7B: 8 experts and a router per layer; published count 46,702,792,704.
    let mixtral = json!({
        "model_type": "mixtral", "vocab_size": 32000, "hidden_size": 4096,
        "intermediate_size": 14336, "num_hidden_layers": 32, "num_attention_heads": 32,
        "num_key_value_heads": 8, "num_local_experts": 8, "num_experts_per_tok": 2
    });
    assert_eq!(param_count(&mixtral), Some(46_702_792_704));
    // Tied embeddings count once.
    let mut tied = tiny();
    tied["tie_word_embeddings"] = json!(true);
    assert_eq!(param_count(&tied), Some(229_696 - 65_536));
    assert_eq!(param_count(&json!({"hidden_size": 64})), None);
}

#[test]
fn dtype_and_quantization_widths() {
    let f32_config = json!({"torch_dtype": "float32"});
    let bf16_config = json!({"torch_dtype": "bfloat16"});
    // auto: a GPU runs float32 checkpoints in 16 bits.
    assert_eq!(dtype_bytes(None, &f32_config), 2.0);
    assert_eq!(dtype_bytes(Some("auto"), &bf16_config), 2.0);
    assert_eq!(dtype_bytes(None, &json!({})), 2.0);
    for (d, b) in [
        ("half", 2.0),
        ("float16", 2.0),
        ("bfloat16", 2.0),
        ("float", 4.0),
        ("float32", 4.0),
    ] {
        assert_eq!(dtype_bytes(Some(d), &f32_config), b, "{d}");
    }
    let none = json!({});
    for (q, b) in [
        ("awq", 0.5),
        ("gptq", 0.5),
        ("awq_marlin", 0.5),
        ("gptq_marlin", 0.5),
        ("fp8", 1.0),
        ("bitsandbytes", 0.5),
    ] {
        assert_eq!(quant_bytes(Some(q), &none), Some(b), "{q}");
    }
    assert_eq!(quant_bytes(None, &none), None);
    assert_eq!(
        quant_bytes(
            None,
            &json!({"quantization_config": {"quant_method": "gptq", "bits": 8}})
        ),
        Some(1.0)
    );
    assert_eq!(quant_bytes(Some("gguf"), &none), None);
}

#[test]
fn refusal_when_the_gpu_is_busy() {
    let config = llama_8b();
    let est = estimate(EstimateInput {
        max_model_len: Some(8192),
        ..input(&config)
    });
    // A 24 GiB GPU with 10 GiB free: vLLM wants 0.9 × 24,576 = 22,118.4 MiB free.
    let check = check_gpus(&est, &[gpu(0, 24_576, 10_240)], 0.9);
    assert_eq!(check.platform, "cuda");
    assert!(check.required_mb >= 22_118, "{check:?}");
    assert_eq!(check.reservation_mb, 22_119);
    assert_eq!(check.available_mb, 10_240);
    assert!(!check.fits);
    let v = serde_json::to_value(&check).unwrap();
    assert_eq!(v["required_mb"], 22_119);
    assert_eq!(v["available_mb"], 10_240);
    assert!(
        check.notes.iter().any(|n| n.contains("10240 MiB")),
        "{:?}",
        check.notes
    );
}

#[test]
fn fits_on_a_free_gpu_and_the_smallest_binds() {
    let config = llama_8b();
    let est = estimate(EstimateInput {
        max_model_len: Some(8192),
        tensor_parallel_size: 2,
        ..input(&config)
    });
    // Two GPUs: 24 GiB and 48 GiB, both nearly free. The reservation is on the smaller.
    let check = check_gpus(&est, &[gpu(0, 24_576, 24_000), gpu(1, 49_152, 49_000)], 0.9);
    assert_eq!(check.reservation_mb, 22_119);
    assert_eq!(check.required_mb, 22_119);
    assert_eq!(check.available_mb, 24_000);
    assert!(check.fits, "{check:?}");
}

#[test]
fn a_model_bigger_than_the_reservation_does_not_fit() {
    let config = llama_8b();
    let est = estimate(EstimateInput {
        max_model_len: Some(8192),
        ..input(&config)
    });
    // 16,341 MiB needed; a free 24 GiB GPU at utilization 0.5 reserves 12,288.
    let check = check_gpus(&est, &[gpu(0, 24_576, 24_576)], 0.5);
    assert_eq!(check.reservation_mb, 12_288);
    assert_eq!(check.required_mb, 16_341);
    assert!(!check.fits);
    assert!(
        check.notes.iter().any(|n| n.contains("at least 0.67")),
        "{:?}",
        check.notes
    );
}

#[test]
fn unknown_estimate_checks_the_reservation_only() {
    let est = estimate(EstimateInput::default());
    let check = check_gpus(&est, &[gpu(0, 81_920, 80_000)], 0.9);
    assert_eq!(check.required_mb, 73_728);
    assert!(check.fits);
    assert!(check.notes.iter().any(|n| n.contains("unknown")));
    // No GPU at all cannot fit.
    assert!(!check_gpus(&est, &[], 0.9).fits);
}

#[test]
fn cpu_check() {
    // The captures' set-up: VLLM_CPU_KVCACHE_SPACE=1, the tiny model (1 MiB of weights).
    let check = check_cpu(1.0, CPU_RUNTIME_OVERHEAD_MB, Some(1), 21_000);
    assert_eq!(check.platform, "cpu");
    // 1,024 + 3,072 + 1
    assert_eq!(check.required_mb, 4_097);
    assert_eq!(check.reservation_mb, 1_024);
    assert_eq!(check.available_mb, 21_000);
    assert!(check.fits);
    assert!(check.notes.iter().any(|n| n.contains("CPU platform")));
    // Unset: vLLM's 4 GiB default; too little memory.
    let check = check_cpu(0.0, CPU_RUNTIME_OVERHEAD_MB, None, 6_000);
    assert_eq!(check.required_mb, 4_096 + 3_072);
    assert!(!check.fits);
}

#[test]
fn load_seconds() {
    // The median of past loads.
    assert_eq!(estimated_load_seconds(Some(1), &[88.0, 66.0, 70.0]), 70);
    assert_eq!(estimated_load_seconds(None, &[66.0, 88.0]), 77);
    // Size-based: 60 s + 15,317 MiB at 1,024 MiB/s (15 s, rounded up) = 75 s.
    assert_eq!(estimated_load_seconds(Some(15_317), &[]), 75);
    assert_eq!(estimated_load_seconds(None, &[]), LOAD_FIXED_SECONDS);
    // Nonsense history is ignored; never 0.
    assert_eq!(estimated_load_seconds(Some(0), &[f64::NAN, -1.0, 0.0]), 60);
    assert_eq!(estimated_load_seconds(None, &[0.2]), 1);
}
