use super::*;

fn parse(args: &[&str]) -> Result<Flags, clap::Error> {
    Flags::try_parse_from(std::iter::once("versa-server").chain(args.iter().copied()))
}

#[test]
fn defaults_match_tensorflow_serving() {
    let f = parse(&["--model_base_path=/models/m"]).expect("parses");
    assert_eq!(f.port, 8500);
    assert_eq!(f.rest_api_port, 0);
    assert_eq!(f.rest_api_timeout_in_ms, 30_000);
    assert_eq!(f.single_model_name(), "default");
    assert_eq!(f.file_system_poll_wait_seconds, 1);
    assert_eq!(f.model_config_file_poll_wait_seconds, 0);
    assert_eq!(f.max_num_load_retries, 5);
    assert_eq!(f.load_retry_interval_micros, 60_000_000);
    assert!(f.enable_model_warmup);
    assert!(!f.allow_version_labels_for_unavailable_models);
    assert_eq!(f.validate(), Ok(vec![]));
}

#[test]
fn booleans_take_all_three_forms() {
    for (arg, expected) in [
        ("--allow_version_labels_for_unavailable_models", true),
        ("--allow_version_labels_for_unavailable_models=true", true),
        ("--allow_version_labels_for_unavailable_models=false", false),
    ] {
        let f = parse(&["--model_base_path=/m", arg]).expect("parses");
        assert_eq!(f.allow_version_labels_for_unavailable_models, expected, "{arg}");
    }
    assert!(
        !parse(&["--model_base_path=/m", "--enable_model_warmup=false"])
            .expect("parses")
            .enable_model_warmup
    );
    assert!(parse(&["--model_base_path=/m", "--enable_model_warmup=maybe"]).is_err());
}

#[test]
fn negative_poll_means_never() {
    let f = parse(&["--model_base_path=/m", "--file_system_poll_wait_seconds=-1"]).expect("parses");
    assert_eq!(f.file_system_poll_wait_seconds, -1);
}

#[test]
fn tensorflow_only_flags_are_accepted_with_a_warning() {
    let f = parse(&[
        "--model_base_path=/m",
        "--saved_model_tags=serve,gpu",
        "--per_process_gpu_memory_fraction=0.5",
    ])
    .expect("parses");
    let warnings = f.validate().expect("valid");
    assert_eq!(
        warnings,
        vec![
            "--saved_model_tags only applies to TensorFlow runtimes; ignored".to_owned(),
            "--per_process_gpu_memory_fraction only applies to TensorFlow runtimes; ignored"
                .to_owned(),
        ]
    );
}

#[test]
fn bad_combinations_are_refused() {
    let cases: [(&[&str], &str); 6] = [
        (&[], "set either --model_config_file"),
        (
            &["--model_base_path=/m", "--port=9000", "--rest_api_port=9000"],
            "--rest_api_port must differ",
        ),
        (
            &["--model_base_path=/m", "--batching_parameters_file=/b"],
            "server_options.batching_parameters_file is set",
        ),
        (
            &["--model_base_path=/m", "--ssl_config_file=/s"],
            "--ssl_config_file/--use_alts_credentials are not supported",
        ),
        (
            &["--model_base_path=/m", "--grpc_socket_path=/tmp/s"],
            "--grpc_socket_path is not supported",
        ),
        (&["--model_base_path=/m", "--transition_policy=fast"], "--transition_policy=fast"),
    ];
    for (args, start) in cases {
        let err = parse(args).expect("parses").validate().expect_err(start);
        assert!(err.0.starts_with(start), "{args:?}: {}", err.0);
    }
    assert!(parse(&["--model_base_path=/m", "--port=notaport"]).is_err());
    assert!(parse(&["--model_base_path=/m", "--no_such_flag=1"]).is_err());
}

#[test]
fn a_flag_given_twice_takes_its_last_value() {
    // The image's entrypoint sets the ports; a Pod's args or `docker run`'s
    // trailing arguments override them.
    let f = parse(&["--port=8500", "--rest_api_port=8501", "--model_base_path=/m", "--port=9000"])
        .expect("parses");
    assert_eq!((f.port, f.rest_api_port), (9000, 8501));
}

#[test]
fn model_from_env_serves_what_tensorflow_servings_image_would() {
    let env = |vars: &'static [(&'static str, &'static str)]| {
        move |name: &str| vars.iter().find(|(k, _)| *k == name).map(|(_, v)| (*v).to_owned())
    };
    let image = ["--port=8500", "--rest_api_port=8501", "--model_from_env"];
    let f = parse(&image).expect("parses").with_model_from_env(env(&[]));
    assert_eq!((f.single_model_name(), f.model_base_path.as_str()), ("model", "/models/model"));
    assert_eq!(f.validate(), Ok(vec![]));

    let vars = &[("MODEL_NAME", "fraud"), ("MODEL_BASE_PATH", "/mnt/models/")];
    let f = parse(&image).expect("parses").with_model_from_env(env(vars));
    assert_eq!((f.single_model_name(), f.model_base_path.as_str()), ("fraud", "/mnt/models/fraud"));

    // --model_name names it; an explicit path or a config file wins outright.
    let named = [&image[..], &["--model_name=scorer"]].concat();
    let f = parse(&named).expect("parses").with_model_from_env(env(vars));
    assert_eq!(
        (f.single_model_name(), f.model_base_path.as_str()),
        ("scorer", "/mnt/models/fraud")
    );
    let config = [&image[..], &["--model_config_file=/etc/models.config"]].concat();
    let f = parse(&config).expect("parses").with_model_from_env(env(vars));
    assert_eq!(f.model_base_path, "");
    let path = [&image[..], &["--model_base_path=/data/m"]].concat();
    let f = parse(&path).expect("parses").with_model_from_env(env(vars));
    assert_eq!((f.single_model_name(), f.model_base_path.as_str()), ("default", "/data/m"));

    // Without the flag the environment means nothing, as for tensorflow_model_server.
    let f = parse(&["--model_base_path=/m"]).expect("parses").with_model_from_env(env(vars));
    assert_eq!((f.single_model_name(), f.model_base_path.as_str()), ("default", "/m"));
}

#[test]
fn the_telemetry_deadline_floor_defaults_to_100_ms_and_0_turns_it_off() {
    let f = parse(&["--model_base_path=/m"]).expect("parses");
    assert_eq!(f.telemetry_min_client_deadline_ms, 100);
    let f =
        parse(&["--model_base_path=/m", "--telemetry_min_client_deadline_ms=0"]).expect("parses");
    assert_eq!(f.telemetry_min_client_deadline_ms, 0);
    assert!(parse(&["--model_base_path=/m", "--telemetry_min_client_deadline_ms=-1"]).is_err());
}

#[test]
fn max_mirror_bytes_defaults_to_64_mib_and_is_at_least_one() {
    let f = parse(&["--model_base_path=/m"]).expect("parses");
    assert_eq!(f.mirror.max_mirror_bytes, 64 << 20);
    let f = parse(&["--model_base_path=/m", "--max_mirror_bytes=1024"]).expect("parses");
    assert_eq!(f.mirror.max_mirror_bytes, 1024);
    let e = parse(&["--model_base_path=/m", "--max_mirror_bytes=0"]).expect_err("refused");
    assert!(e.to_string().contains("max_mirror_bytes"), "{e}");
}
