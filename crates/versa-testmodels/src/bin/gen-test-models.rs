//! Writes the example model repository: `gen-test-models <dir>`.

fn main() -> std::process::ExitCode {
    let Some(root) = std::env::args_os().nth(1) else {
        eprintln!("usage: gen-test-models <output-dir>");
        return std::process::ExitCode::from(2);
    };
    let root = std::path::PathBuf::from(root);
    let result = versa_testmodels::write_example_repository(&root).and_then(|()| {
        versa_testmodels::write_version(
            &root.join("mlp"),
            1,
            &versa_testmodels::mlp(&[784, 512, 256, 10]),
        )
        .map(|_| ())
    });
    match result {
        Ok(()) => {
            eprintln!("wrote example models under {}", root.display());
            std::process::ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("gen-test-models: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
