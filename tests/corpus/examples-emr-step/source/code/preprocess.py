
from pyspark.ml.feature import StringIndexer
from pyspark.sql import SparkSession
from pyspark.sql import functions as F
from pyspark.ml.functions import vector_to_array
from pyspark.sql.types import StructType, StructField, StringType, DoubleType
from pyspark.ml import Pipeline
from argparse import ArgumentParser


def process(args):
    print("Starting spark session")
    spark = SparkSession.builder.appName("preprocess").getOrCreate()
    spark.conf.set("mapreduce.fileoutputcommitter.marksuccessfuljobs", "false")

    schema = StructType(
        [
            StructField("sex", StringType(), True),
            StructField("length", DoubleType(), True),
            StructField("diameter", DoubleType(), True),
            StructField("height", DoubleType(), True),
            StructField("whole_weight", DoubleType(), True),
            StructField("shucked_weight", DoubleType(), True),
            StructField("viscera_weight", DoubleType(), True),
            StructField("shell_weight", DoubleType(), True),
            StructField("rings", DoubleType(), True),
        ]
    )

    print("Reading source data")
    df = spark.read.csv(args.input, schema=schema).fillna("missing", subset=["sex"])

    from pyspark.ml.feature import (
        Imputer,
        OneHotEncoder,
        StandardScaler,
        OneHotEncoder,
        VectorAssembler,
    )

    numerical_features = [
        "length",
        "diameter",
        "height",
        "whole_weight",
        "shucked_weight",
        "viscera_weight",
        "shell_weight",
    ]
    print("Performing feature engineering")
    pipeline = Pipeline(
        stages=[
            StringIndexer(inputCol="sex", outputCol="cat_sex"),
            OneHotEncoder(
                inputCols=["cat_sex"],
                outputCols=["feature_sex"],
                dropLast=False,
            ),
            Imputer(
                inputCols=numerical_features,
                outputCols=[f"impute_{c}" for c in numerical_features],
                strategy="median",
            ),
            VectorAssembler(
                inputCols=[f"impute_{c}" for c in numerical_features], outputCol="vector"
            ),
            StandardScaler(inputCol="vector", outputCol="features"),
        ]
    )
    print("Fitting transformers")
    model = pipeline.fit(df)
    print("Transforming source data")
    df_out = (
        model.transform(df)
        .select(
            "rings",
            vector_to_array(F.col("features")).alias("features"),
            vector_to_array(F.col("feature_sex")).alias("feature_sex"),
        )
        .select(
            [F.col("rings")]
            + [F.col("features")[idx] for idx in range(len(numerical_features))]
            + [F.col("feature_sex")[idx] for idx in range(3)]
        )
    )

    # shuffle
    # split train/test/valid
    # write out to csvs without headers or indices
    print("Writing train/valid/test spits")
    train, valid, test = df_out.orderBy(F.rand()).randomSplit([0.7, 0.15, 0.15])
    prefix = args.output
    train.repartition(1).write.mode("overwrite").csv(f"{prefix}/train")
    valid.repartition(1).write.mode("overwrite").csv(f"{prefix}/valid")
    test.repartition(1).write.mode("overwrite").csv(f"{prefix}/test")

    spark.stop()


if __name__ == "__main__":
    parser = ArgumentParser()
    parser.add_argument("--input")
    parser.add_argument("--output")
    args, _ = parser.parse_known_args()
    process(args)
