//! Prints the ModelDeployment CRD (`make generate` writes it to `crds/`).

fn main() {
    #[allow(clippy::print_stdout)] // the CRD on stdout is the output
    {
        print!("{}", versa_crd::crd_yaml());
    }
}
